"""`towerline demo`: the whole path on embedded defaults, small enough for a laptop.

world → Parquet lake → Feast apply + profiles → dev broker → replay one day of
engagements → consume them back with a consumer group → summary table.
"""

import contextlib
import dataclasses
import datetime as dt
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from schemas.codec import AvroCodec
from schemas.errors import SchemaError
from towerline.core.errors import TowerlineError

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
    force: bool = False  # use a workdir the demo did not create
    verbose: bool = False  # library logs live on the terminal, not only in the log file


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict:
    """Run every step, print a summary and return it (tests read the dict)."""
    console = console or Console()
    lake, started = cfg.workdir / "lake", time.monotonic()
    _clear_previous_run(cfg.workdir)
    summary: dict = {}
    with _step(console, "generate the synthetic world"):
        summary["world"] = _generate(cfg, lake)
    store = _open_store(cfg)
    with _step(console, "apply the Feast repo and load profiles"):
        summary["profiles"] = _load_profiles(store, lake)
    with _step(console, "train, encode, build corpus and index, publish"):
        summary["batch"] = _batch(cfg, lake, store)
    with (
        _broker(cfg, console) as bootstrap,
        _step(console, "replay one day of engagements through a stream worker"),
    ):
        summary["replay"] = _replay_and_consume(cfg, lake, bootstrap, store)
    summary["seconds"] = round(time.monotonic() - started, 1)
    console.print(_summary_table(summary))
    replay = summary["replay"]
    if not replay["stream"]["caught_up"]:
        raise DemoError(f"the stream worker did not catch up: {replay['stream']}")
    if replay["failed"] or replay["consumed"] != replay["sent"] or replay["undecodable"]:
        raise DemoError(f"replay lost or mangled records: {replay}")
    console.print_json(data={"index_metadata": summary["batch"]["index"]})
    console.print(
        f"\nLook next: the lake under [bold]{lake}[/bold] (world.json holds the planted truth), "
        f"the Feast registry and online store under [bold]{cfg.workdir / 'feast'}[/bold], "
        "and `towerline --help` for every command."
    )
    return summary


def _clear_previous_run(workdir: Path) -> None:
    """The demo owns its workdir: a second `make demo` starts from a clean slate."""
    for name in ("lake", "feast", "registry", "indexes", "corpus"):
        shutil.rmtree(workdir / name, ignore_errors=True)


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
    return generate(world, lake, progress=True)


def _open_store(cfg: DemoConfig):
    from towerline.core.featurestore import open_store

    return open_store(data_dir=cfg.workdir / "feast", online="sqlite")


def _batch(cfg: DemoConfig, lake: Path, store) -> dict:
    from towerline.demo.chain import train_encode_index

    return train_encode_index(lake, cfg.workdir, cfg.end_date, store)


def _load_profiles(store, lake: Path) -> dict:
    from batch.profiles import load_profiles
    from towerline.core.featurestore import apply_repo, read_online

    apply_repo(store, lake=lake)
    counts = load_profiles(store, lake, progress=True)
    user = read_online(store, USER_FEATURES, [{"user_id": 1}])
    pin = read_online(store, PIN_FEATURES, [{"pin_id": 1}])
    return {
        "rows": counts,
        "user_1": {k: v[0] for k, v in user.items() if k != "user_id"},
        "pin_1": {k: v[0] for k, v in pin.items() if k != "pin_id"},
    }


def _replay_and_consume(cfg: DemoConfig, lake: Path, bootstrap: str, store) -> dict:
    from streams.config import WorkerConfig
    from streams.runner import run_worker_in_thread
    from towerline.replay import replay_partition

    day = cfg.end_date.isoformat()
    worker_cfg = WorkerConfig(
        group_id="towerline-demo",
        bootstrap=bootstrap,
        state_namespace=f"towerline:demo:{time.time_ns()}",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    with run_worker_in_thread(worker_cfg, store) as worker:
        result = replay_partition(lake, day, bootstrap, table="engagements", progress=True)
        caught_up = worker.wait_applied(result.sent, timeout_s=120)
        stream = {
            "caught_up": caught_up,
            "applied": worker.stats.applied,
            "dead_lettered": worker.stats.dead_lettered,
            "pipeline_latency_ms": worker.pipeline_latency_ms(),
            "freshness_ms": worker.freshness_ms(),
        }
    actions, bad = _consume_back(bootstrap, result.topic, expected=result.sent)
    return {
        "stream": stream,
        "dt": day,
        "sent": result.sent,
        "failed": result.failed,
        "send_seconds": round(result.seconds, 2),
        "consumed": sum(actions.values()),
        "undecodable": bad,
        "by_action": dict(actions),
    }


def _consume_back(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> tuple:
    """Read the topic from the start with a fresh consumer group until `expected` arrive."""
    from kafka import KafkaConsumer

    codec, actions, bad = AvroCodec(), Counter(), 0
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"towerline-demo-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while sum(actions.values()) + bad < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for message in records:
                    try:
                        actions[codec.decode(message.value)[1]["action"]] += 1
                    except SchemaError:
                        bad += 1
        consumer.commit()
    finally:
        consumer.close()
    return actions, bad


def _summary_table(summary: dict) -> Table:
    world, replay = summary["world"], summary["replay"]
    table = Table(title="towerline demo", show_header=True)
    table.add_column("step")
    table.add_column("result", justify="right")
    table.add_row("users / pins", f"{world['users']:,} / {world['pins']:,}")
    table.add_row(
        "offsite events / engagements",
        f"{world['offsite_events']:,} / {world['engagement_events']:,}",
    )
    profiles = summary["profiles"]
    for view, rows in profiles["rows"].items():
        table.add_row(f"online rows: {view}", f"{rows:,}")
    table.add_row("online read user 1", " ".join(str(v) for v in profiles["user_1"].values()))
    pin = profiles["pin_1"]
    interests = ", ".join(
        f"{i}:{c:.2f}"
        for i, c in zip(pin["interest_ids"], pin["interest_confidences"], strict=True)
    )
    table.add_row("online read pin 1 interests", interests)
    table.add_row(
        f"engagements sent ({replay['dt']})", f"{replay['sent']:,} in {replay['send_seconds']}s"
    )
    table.add_row(
        "consumed back / undecodable", f"{replay['consumed']:,} / {replay['undecodable']}"
    )
    for action, n in sorted(replay["by_action"].items()):
        table.add_row(f"  {action}", f"{n:,}")
    batch = summary["batch"]
    index = batch["index"]
    table.add_row("model version (train s)", f"{batch['version']} ({batch['train_seconds']}s)")
    table.add_row("history states encoded", f"{batch['encoded_users']:,}")
    table.add_row("corpus snapshot", f"{batch['corpus']['snapshot_id']}")
    table.add_row("index", f"{index['num_items']:,} items, dim {index['dim']}, {index['metric']}")
    table.add_row("serving version", f"{batch['serving']['model_version']}")
    stream = replay["stream"]
    table.add_row(
        "stream worker applied / dead-lettered",
        f"{stream['applied']:,} / {stream['dead_lettered']}",
    )
    table.add_row("pipeline latency p50 / p99 ms", _pct(stream["pipeline_latency_ms"]))
    table.add_row("event-time freshness p50 / p99 ms", _pct(stream["freshness_ms"]))
    table.add_row("total time", f"{summary['seconds']}s")
    return table


def _pct(values: dict) -> str:
    return " / ".join("-" if values.get(q) is None else f"{values[q]:,.0f}" for q in ("p50", "p99"))
