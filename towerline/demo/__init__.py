"""`towerline demo`: the whole path on embedded defaults, small enough for a laptop.

world → Parquet lake → Feast apply + profiles → train, encode, corpus, index, publish →
dev broker → replay one day of engagements through a stream worker → consume them back →
summary table → freshness of every view (table, and an HTML report). The terminal shows the steps and the results; library logs go to
``WORKDIR/towerline.log`` (and to the terminal too with ``verbose``).
"""

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from towerline.core.errors import TowerlineError
from towerline.demo.logs import LOG_NAME, library_logs
from towerline.demo.summary import epoch_line, serving_table, summary_table
from towerline.demo.workdir import claim_workdir

USER_FEATURES = [f"user_profile:{f}" for f in ("age_bucket", "gender", "country", "segment")]
PIN_FEATURES = ["pin_profile:interest_ids", "pin_profile:interest_confidences"]


class DemoError(TowerlineError):
    """A demo step produced the wrong result."""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    workdir: Path
    users: int
    pins: int
    days: int
    end_date: dt.date
    seed: int = 7
    bootstrap: str | None = None  # None: start the embedded dev broker
    partitions: int = 4
    force: bool = False  # use a non-empty workdir the demo did not create
    verbose: bool = False  # library logs live on the terminal, not only in the log file


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict:
    """Run every step, print a summary and return it (tests read the dict).

    Refuses (``RefusedError``) a non-empty workdir the demo did not create, unless
    ``cfg.force``: each run replaces the previous run's outputs there."""
    workdir = claim_workdir(cfg.workdir, force=cfg.force)
    log_path = workdir / LOG_NAME
    with library_logs(log_path, verbose=cfg.verbose) as terminal:
        console = console or Console(file=terminal)
        console.print(f"library logs: [bold]{log_path}[/bold]", highlight=False)
        summary = _run_steps(cfg, console)
        _check(summary)
        console.print_json(data={"index_metadata": summary["batch"]["index"]})
        console.print(
            f"\nLook next: the lake under [bold]{workdir / 'lake'}[/bold] (world.json holds "
            f"the planted truth), the Feast registry and online store under "
            f"[bold]{workdir / 'feast'}[/bold], library logs in [bold]{log_path}[/bold], "
            "and `towerline --help` for every command.",
            highlight=False,
        )
        # Last, as an operator's morning starts: how fresh is everything just built.
        console.print(
            summary["freshness"]["table"], highlight=False, markup=False, end="", soft_wrap=True
        )
        console.print(f"freshness report: [bold]{summary['freshness']['report']}[/bold]")
    summary["log"] = str(log_path)
    return summary


def _run_steps(cfg: DemoConfig, console: Console) -> dict:
    lake, started = cfg.workdir / "lake", time.monotonic()
    summary: dict = {}
    with _step(console, "generate the synthetic world"):
        summary["world"] = _generate(cfg, lake)
    store = _open_store(cfg)
    with _step(console, "apply the Feast repo and load profiles"):
        summary["profiles"] = _load_profiles(store, lake, cfg.workdir)
    with _step(console, "train, encode, build corpus and index, publish"):
        summary["batch"] = _batch(cfg, lake, store)
        for row in summary["batch"]["epochs"]:
            console.print(epoch_line(row), highlight=False)
    with (
        _broker(cfg, console) as bootstrap,
        _step(console, "replay one day of engagements through a stream worker"),
    ):
        summary["replay"] = _replay(cfg, lake, bootstrap, store)
    with _step(console, "serve the published version; publish another and roll back"):
        summary["serving"] = _serve(cfg, lake, store)
    with _step(console, "retrain: a new version against the live one on a held-out day"):
        summary["retrain"] = _retrain(cfg, lake, store)
    console.print(summary["retrain"]["table"], highlight=False, markup=False)
    summary["seconds"] = round(time.monotonic() - started, 1)
    console.print(serving_table(summary["serving"]))
    console.print(summary_table(summary))
    with _step(console, "freshness of every feature view, the stream and the index"):
        summary["freshness"] = _freshness(cfg, lake, store, summary["replay"]["stream"])
    return summary


def _check(summary: dict) -> None:
    swaps = summary["serving"]["swaps"]
    if swaps["failed"]:
        raise DemoError(f"{swaps['failed']} requests failed while the version changed: {swaps}")
    replay = summary["replay"]
    if not replay["stream"]["caught_up"]:
        raise DemoError(f"the stream worker did not catch up: {replay['stream']}")
    if replay["failed"] or replay["consumed"] != replay["sent"] or replay["undecodable"]:
        raise DemoError(f"replay lost or mangled records: {replay}")


@contextlib.contextmanager
def _step(console: Console, title: str) -> Iterator[None]:
    console.rule(f"[bold]{title}")
    t0 = time.monotonic()
    yield
    console.print(f"[green]✓[/green] {title} ({time.monotonic() - t0:.1f}s)")


@contextlib.contextmanager
def _broker(cfg: DemoConfig, console: Console) -> Iterator[str]:
    if cfg.bootstrap:
        yield cfg.bootstrap
        return
    from towerline.devbroker import running_broker

    with running_broker(cfg.workdir / "run", partitions=cfg.partitions) as info:
        console.print(f"dev broker on {info.bootstrap} (pid {info.pid})")
        yield info.bootstrap
    console.print("dev broker stopped")


def _generate(cfg: DemoConfig, lake: Path) -> dict:
    from towerline.world import WorldConfig, generate

    world = WorldConfig(
        users=cfg.users, pins=cfg.pins, days=cfg.days, seed=cfg.seed, end_date=cfg.end_date
    )
    return generate(world, lake, progress=False)


def _open_store(cfg: DemoConfig):
    from towerline.core.featurestore import open_store

    return open_store(data_dir=cfg.workdir / "feast", online="sqlite")


def _batch(cfg: DemoConfig, lake: Path, store) -> dict:
    from towerline.demo.chain import train_encode_index

    return train_encode_index(lake, cfg.workdir, cfg.end_date, store)


def _load_profiles(store, lake: Path, workdir: Path) -> dict:
    from batch.profiles import load_profiles
    from towerline.core.featurestore import apply_repo, read_online
    from towerline.demo.chain import recorded

    apply_repo(store, lake=lake)
    where = f"{store.config.online_store.type}:{store.project}"
    counts = recorded(
        workdir, "load-profiles", lambda: load_profiles(store, lake, progress=False), where
    )
    user = read_online(store, USER_FEATURES, [{"user_id": 1}])
    pin = read_online(store, PIN_FEATURES, [{"pin_id": 1}])
    return {
        "rows": counts,
        "user_1": {k: v[0] for k, v in user.items() if k != "user_id"},
        "pin_1": {k: v[0] for k, v in pin.items() if k != "pin_id"},
    }


def _serve(cfg: DemoConfig, lake: Path, store) -> dict:
    from towerline.demo.chain import roll_back, second_version
    from towerline.demo.serving import serve_and_swap

    return serve_and_swap(
        cfg.workdir,
        lake,
        cfg.end_date,
        store,
        publish_second=lambda: second_version(lake, cfg.workdir, cfg.end_date, store),
        roll_back=lambda: roll_back(lake, cfg.workdir, store),
    )


def _retrain(cfg: DemoConfig, lake: Path, store) -> dict:
    """One retrain cycle; with a single day of data there is nothing to hold out."""
    if cfg.days < 2:
        return {"table": "retrain skipped: one day of data leaves none to hold out"}
    from towerline.demo.chain import retrain_cycle

    cycle = retrain_cycle(lake, cfg.workdir, cfg.end_date, store)
    served = f"served {cycle['served_before']} before, {cycle['served_after']} after"
    cycle["table"] += f"\n{cycle['decision']} {cycle['candidate']['version']}: {served}"
    return cycle


def _freshness(cfg: DemoConfig, lake: Path, store, stream: dict) -> dict:
    """What `towerline freshness` and `freshness report` show, over the demo's own outputs.

    The broker and the server are stopped by now: lag by offsets and the hosts' versions
    are not measured (the table says so); the rest reads the ledger, the store, the lake,
    the registry and the index store."""
    from monitoring import history
    from monitoring.collect import Sources, collect
    from monitoring.report import render
    from monitoring.table import render_table
    from towerline.core.files import write_text_atomic
    from towerline.demo.workdir import HISTORY_NAME, LEDGER_NAME, REPORT_NAME

    sources = Sources(
        ledger=cfg.workdir / LEDGER_NAME,
        lake=lake,
        registry=cfg.workdir / "registry",
        indexes=cfg.workdir / "indexes",
        store=store,
        group=stream["group"],
        state_namespace=stream["state_namespace"],
    )
    snapshot = collect(sources)
    past = cfg.workdir / HISTORY_NAME
    history.append(past, snapshot)
    report = cfg.workdir / REPORT_NAME
    write_text_atomic(report, render(snapshot, history.read(past)))
    return {
        "table": render_table(snapshot),
        "report": str(report),
        "slos": {r.slo: r.status for r in snapshot.slos},
        "unreachable": list(snapshot.unreachable),
    }


def _replay(cfg: DemoConfig, lake: Path, bootstrap: str, store) -> dict:
    from towerline.demo.stream import replay_and_consume

    return replay_and_consume(lake, cfg.end_date.isoformat(), bootstrap, store)
