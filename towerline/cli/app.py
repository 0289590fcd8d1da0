"""The `towerline` command line. It only parses arguments and calls the packages.

Options and the environment are resolved in ``towerline.cli.options``; heavy imports happen
inside each command so `towerline --help` stays fast. ``main`` is the one error handler:
a ``TowerlineError`` prints one line and exits with its code, anything else is a bug and
keeps its traceback.
"""

import json
import logging
import math
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# typer 0.29 vendors click; its exceptions are the ones raised by the commands.
from typer._click import exceptions as click_errors

from towerline.cli import options as o
from towerline.cli.batch_encode import batch_encode_cmd
from towerline.cli.batch_index import (
    batch_corpus_cmd,
    batch_index_cmd,
    index_rollback_cmd,
    publish_cmd,
    rollback_cmd,
)
from towerline.cli.daily import daily_cmd
from towerline.cli.freshness import freshness_app
from towerline.cli.importer import import_app
from towerline.cli.model import evaluate_cmd, train_cmd
from towerline.cli.retrain import retrain_cmd
from towerline.cli.serve import serve_cmd
from towerline.cli.stream import stream_run_cmd
from towerline.core.errors import EXIT_INTERRUPTED, EXIT_USAGE, TowerlineError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(help="The embedded Kafka-protocol dev broker (Tansu, memory storage).")
produce_app = typer.Typer(help="Replay lake partitions to Kafka as Avro.")
features_app = typer.Typer(help="The Feast feature repository and its online store.")
batch_app = typer.Typer(
    help="Beam batch jobs (DirectRunner by default; pipeline options after `--`).",
    no_args_is_help=True,
)
index_app = typer.Typer(help="Published HNSW indexes.", no_args_is_help=True)
stream_app = typer.Typer(help="Kafka stream workers.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(produce_app, name="produce")
app.add_typer(features_app, name="features")
app.add_typer(import_app, name="import", help="Import public data sets into a lake.")
app.add_typer(batch_app, name="batch")
app.add_typer(index_app, name="index")
app.add_typer(stream_app, name="stream")
app.add_typer(freshness_app, name="freshness")
app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)
batch_app.command("encode", context_settings=o.BEAM_CONTEXT)(batch_encode_cmd)
batch_app.command("corpus", context_settings=o.BEAM_CONTEXT)(batch_corpus_cmd)
batch_app.command("index", context_settings=o.BEAM_CONTEXT)(batch_index_cmd)
index_app.command("rollback")(index_rollback_cmd)
app.command("publish")(publish_cmd)
app.command("rollback")(rollback_cmd)
app.command("daily", context_settings=o.BEAM_CONTEXT)(daily_cmd)
app.command("retrain", context_settings=o.BEAM_CONTEXT)(retrain_cmd)
stream_app.command("run")(stream_run_cmd)
app.command("serve")(serve_cmd)

console = Console(stderr=True)
_STATE = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of an error.")
    ] = False,
) -> None:
    """towerline — streaming features and embeddings for contextual two-tower retrieval.

    Exit codes: 0 success; 1 refused or failed (a check did not pass, a service is
    unreachable, stored data does not verify); 2 bad usage or input; 130 interrupted.

    Put --debug before the command to see the traceback of an error.
    """
    _STATE["debug"] = debug


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Lake directory to write (must not hold a world).")],
    users: Annotated[int, typer.Option(min=1)] = 10_000,
    pins: Annotated[
        int, typer.Option(min=64, help="Pins; at least one per interest (64 interests).")
    ] = 20_000,
    days: Annotated[int, typer.Option(min=1, help="Days of events, ending at --end-date.")] = 30,
    seed: int = 7,
    end_date: Annotated[
        str | None, typer.Option(help="Last day, YYYY-MM-DD (UTC); default yesterday.")
    ] = None,
    session_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of offsite conversions that follow an on-platform session whose "
            "engagements carry the conversion's intent (0: no sessions).",
        ),
    ] = 0.6,
    session_explore: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Chance that a session's intent is drawn from the global interests instead "
            "of the user's own: what only the subject-pin context can reveal.",
        ),
    ] = 0.5,
    progress: o.Progress = True,
) -> None:
    """Write a deterministic synthetic world with planted structure to a Parquet lake."""
    from towerline.world import WorldConfig
    from towerline.world import generate as run_generate

    last_day = o.parse_date(end_date, "--end-date") if end_date else o.yesterday()
    cfg = WorldConfig(
        users=users,
        pins=pins,
        days=days,
        seed=seed,
        end_date=last_day,
        session_rate=session_rate,
        session_explore=session_explore,
    )
    summary = run_generate(cfg, out, progress=progress)
    typer.echo(json.dumps(summary))


@dev_app.command("up")
def dev_up(
    run_dir: o.RunDir = None,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions per topic.")] = 4,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Loopback port; default a free one.")
    ] = None,
) -> None:
    """Start the dev broker on 127.0.0.1 and create the topics (no-op if running)."""
    from towerline import devbroker

    info = devbroker.start(o.run_dir(run_dir), partitions=partitions, port=port)
    typer.echo(f"broker running: bootstrap={info.bootstrap} pid={info.pid}")


@dev_app.command("down")
def dev_down(run_dir: o.RunDir = None) -> None:
    """Stop the dev broker recorded in the run directory (only that PID)."""
    from towerline import devbroker

    stopped = devbroker.stop(o.run_dir(run_dir))
    typer.echo("broker stopped" if stopped else "no broker was running")


@dev_app.command("status")
def dev_status(run_dir: o.RunDir = None) -> None:
    """Say whether the dev broker is running, and where. Exit 1 when it is not."""
    from towerline import devbroker

    info = devbroker.status(o.run_dir(run_dir))
    if info is None:
        typer.echo("no broker running")
        raise typer.Exit(1)
    typer.echo(f"running: bootstrap={info.bootstrap} pid={info.pid} since {info.started_at}")


def _rate(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(
            f"{value} is not a rate: give records per second > 0, or leave it out for "
            "as fast as possible",
            param_hint="--rate",
        )
    return value


Rate = Annotated[
    float | None,
    typer.Option(callback=_rate, help="Records per second (> 0); default as fast as possible."),
]


def _produce_command(table: str, what: str):
    """One `towerline produce` command per lake table; they differ only in the table."""

    def command(
        lake: o.Lake,
        dt_: o.Day,
        rate: Rate = None,
        bootstrap: o.Bootstrap = None,
        run_dir: o.RunDir = None,
        progress: o.Progress = True,
    ) -> None:
        from towerline.replay import replay_partition

        result = replay_partition(
            lake, dt_, o.bootstrap(bootstrap, run_dir), table=table, rate=rate, progress=progress
        )
        typer.echo(f"sent {result.sent} {table} records to {result.topic} in {result.seconds:.1f}s")
        if result.failed:
            reasons = "; ".join(result.errors[:3])
            raise TowerlineError(f"{result.failed} records failed to send: {reasons}")

    command.__doc__ = f"Send one day of {what} to the `{table}` topic, keyed by user_id."
    return command


produce_app.command("engagements")(_produce_command("engagements", "engagements"))
produce_app.command("offsite-conversions")(
    _produce_command("offsite_conversions", "offsite conversions")
)


@features_app.command("apply")
def features_apply(
    repo: o.Repo = o.REPO_DEFAULT,
    online: o.Online = None,
    redis_url: o.RedisUrl = None,
    data_dir: o.DataDir = None,
    project: o.Project = None,
    lake: Annotated[
        Path | None,
        typer.Option(envvar="TOWERLINE_LAKE", help="The lake the offline sources read."),
    ] = None,
) -> None:
    """Register entities and feature views (like `feast apply`) and create the online tables."""
    from towerline.core.featurestore import apply_repo

    apply_repo(o.feature_store(repo, online, redis_url, data_dir, project), lake=lake)
    typer.echo("feature repository applied")


@features_app.command("load-profiles")
def features_load_profiles(
    lake: o.Lake,
    repo: o.Repo = o.REPO_DEFAULT,
    online: o.Online = None,
    redis_url: o.RedisUrl = None,
    data_dir: o.DataDir = None,
    project: o.Project = None,
    progress: o.Progress = True,
    ledger_path: o.Ledger = o.DEFAULT_LEDGER,
) -> None:
    """Write user_profile and pin_profile from the lake to the online store; record the run
    in the ledger."""
    from batch.profiles import load_profiles
    from towerline.core import ledger

    with ledger.Run(ledger_path, "load-profiles") as run:
        store = o.feature_store(repo, online, redis_url, data_dir, project)
        counts = load_profiles(store, lake, progress=progress)
        where = f"{store.config.online_store.type}:{store.project}"
        run.succeeded(**ledger.facts("load-profiles", counts, output=where))
    typer.echo(json.dumps(counts))


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the demo writes everything (a directory it created).")
    ] = Path(".towerline/demo"),
    users: Annotated[int, typer.Option(min=1)] = 2_000,
    pins: Annotated[int, typer.Option(min=64)] = 4_000,
    days: Annotated[int, typer.Option(min=1)] = 7,
    bootstrap: o.Bootstrap = None,
    force: Annotated[
        bool,
        typer.Option(help="Use --workdir even if it holds data the demo did not create."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option(help="Show library logs live (they always go to the log file).")
    ] = False,
) -> None:
    """End to end on embedded defaults: world → lake → Feast → train → encode → index →
    publish → broker → replay → consume. Library logs go to WORKDIR/towerline.log."""
    from towerline.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        workdir=workdir,
        users=users,
        pins=pins,
        days=days,
        end_date=o.yesterday(),
        bootstrap=bootstrap,
        force=force,
        verbose=verbose,
    )
    run_demo(cfg)


def _quiet_libraries() -> None:
    # kafka-python 3.0 loads its protocol files through a deprecated importlib API.
    warnings.filterwarnings("ignore", message=r"(read|open)_text is deprecated")
    # Library chatter (Beam's option parsing, kafka-python's reconnects) is not for the
    # terminal of a CLI user; commands that run long jobs configure a log file themselves.
    # Python warnings become log records, so a library that resets the warning filters
    # (Feast, Beam) cannot put them back on the terminal.
    logging.captureWarnings(True)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    # dask.distributed sets up its own loggers from its config at import (INFO lines on the
    # terminal from the LocalCluster a DaskRunner starts when given no cluster address);
    # its config reads this variable. A user's own setting wins.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")


def _say_error(message: str, code: int) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map user errors to one line and an exit code (see ``_root``)."""
    _quiet_libraries()
    try:
        code = app(args=argv, prog_name="towerline", standalone_mode=False)
        if code == EXIT_INTERRUPTED:  # typer catches KeyboardInterrupt and returns 130
            _say_error("interrupted", EXIT_INTERRUPTED)
    except (typer.Abort, KeyboardInterrupt):
        _say_error("interrupted", EXIT_INTERRUPTED)
    except click_errors.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click_errors.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "towerline"
        _say_error(f"{_one_line(exc.format_message())} (see `{where} --help`)", exc.exit_code)
    except click_errors.ClickException as exc:
        _say_error(_one_line(exc.format_message()), exc.exit_code)
    except TowerlineError as exc:
        if _STATE["debug"]:
            traceback.print_exc()
        _say_error(_one_line(exc), exc.exit_code)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        if _STATE["debug"]:
            traceback.print_exc()
        _say_error(f"{exc.strerror}: {exc.filename}", EXIT_USAGE)
    sys.exit(code if isinstance(code, int) else 0)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    main()
