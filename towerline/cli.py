"""The `towerline` command line. It only parses arguments and calls the packages.

Entry points read the environment here and nowhere else; heavy imports happen inside
each command so `towerline --help` stays fast.
"""

import datetime as dt
import json
import os
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# The command modules import torch, Beam, Feast and Kafka inside their commands only.
from towerline.cli_batch_encode import CONTEXT_SETTINGS as ENCODE_CONTEXT
from towerline.cli_batch_encode import batch_encode_cmd
from towerline.cli_batch_index import (
    batch_corpus_cmd,
    batch_index_cmd,
    index_rollback_cmd,
    publish_cmd,
)
from towerline.cli_import import import_app
from towerline.cli_model import evaluate_cmd, train_cmd
from towerline.cli_stream import stream_run_cmd

app = typer.Typer(
    help="towerline — streaming features and embeddings for contextual two-tower retrieval.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
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
app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)
batch_app.command("encode", context_settings=ENCODE_CONTEXT)(batch_encode_cmd)
batch_app.command("corpus", context_settings=ENCODE_CONTEXT)(batch_corpus_cmd)
batch_app.command("index", context_settings=ENCODE_CONTEXT)(batch_index_cmd)
index_app.command("rollback")(index_rollback_cmd)
app.command("publish")(publish_cmd)
stream_app.command("run")(stream_run_cmd)

console = Console(stderr=True)

RUN_DIR_HELP = "Where the dev broker records its port and PID [env TOWERLINE_RUN_DIR]."
BOOTSTRAP_HELP = (
    "Kafka bootstrap servers, e.g. kafka-1:9092,kafka-2:9092 [env TOWERLINE_BOOTSTRAP_SERVERS]; "
    "default: the running dev broker."
)
RunDir = Annotated[Path | None, typer.Option(help=RUN_DIR_HELP)]
Bootstrap = Annotated[str | None, typer.Option("--bootstrap-servers", help=BOOTSTRAP_HELP)]
RepoDir = Annotated[Path, typer.Option(help="The Feast repository.")]
Online = Annotated[
    str | None,
    typer.Option(
        help="Online store: sqlite or redis [env TOWERLINE_ONLINE_STORE]; default sqlite."
    ),
]
RedisUrl = Annotated[
    str | None, typer.Option(help="Redis host:port [env TOWERLINE_REDIS_URL] when --online redis.")
]
DataDir = Annotated[
    Path | None,
    typer.Option(help="Where the Feast registry and SQLite store live; default feature_repo/data."),
]


def _run_dir(value: Path | None) -> Path:
    from towerline.kafka_config import DEFAULT_RUN_DIR

    return value or Path(os.environ.get("TOWERLINE_RUN_DIR", DEFAULT_RUN_DIR))


def _bootstrap(value: str | None, run_dir: Path | None) -> str:
    from towerline.kafka_config import resolve_bootstrap

    return resolve_bootstrap(value, os.environ, _run_dir(run_dir))


def _store(repo: Path, online: str | None, redis_url: str | None, data_dir: Path | None):
    from towerline.featurestore import open_store

    return open_store(
        repo,
        online=online or os.environ.get("TOWERLINE_ONLINE_STORE"),
        redis_url=redis_url or os.environ.get("TOWERLINE_REDIS_URL"),
        data_dir=data_dir,
    )


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Lake directory to write.")],
    users: Annotated[int, typer.Option(min=1)] = 10_000,
    pins: Annotated[int, typer.Option(min=1)] = 20_000,
    days: Annotated[int, typer.Option(min=1, help="Days of events, ending at --end-date.")] = 30,
    seed: int = 7,
    end_date: Annotated[
        str | None, typer.Option(help="Last day, YYYY-MM-DD (UTC); default yesterday.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Write a deterministic synthetic world with planted structure to a Parquet lake."""
    from towerline.world import WorldConfig
    from towerline.world import generate as run_generate

    last_day = dt.date.fromisoformat(end_date) if end_date else _yesterday()
    cfg = WorldConfig(users=users, pins=pins, days=days, seed=seed, end_date=last_day)
    summary = run_generate(cfg, out, progress=progress)
    typer.echo(json.dumps(summary))


@dev_app.command("up")
def dev_up(
    run_dir: RunDir = None,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions per topic.")] = 4,
    port: Annotated[int | None, typer.Option(help="Loopback port; default a free one.")] = None,
) -> None:
    """Start the dev broker on 127.0.0.1 and create the topics (no-op if running)."""
    from towerline import devbroker

    info = devbroker.start(_run_dir(run_dir), partitions=partitions, port=port)
    typer.echo(f"broker running: bootstrap={info.bootstrap} pid={info.pid}")


@dev_app.command("down")
def dev_down(run_dir: RunDir = None) -> None:
    """Stop the dev broker recorded in the run directory (only that PID)."""
    from towerline import devbroker

    stopped = devbroker.stop(_run_dir(run_dir))
    typer.echo("broker stopped" if stopped else "no broker was running")


@dev_app.command("status")
def dev_status(run_dir: RunDir = None) -> None:
    """Say whether the dev broker is running, and where. Exit 1 when it is not."""
    from towerline import devbroker

    info = devbroker.status(_run_dir(run_dir))
    if info is None:
        typer.echo("no broker running")
        raise typer.Exit(1)
    typer.echo(f"running: bootstrap={info.bootstrap} pid={info.pid} since {info.started_at}")


def _replay(table: str, lake: Path, dt_: str, rate, bootstrap, run_dir, progress) -> None:
    from towerline.replay import replay_partition

    result = replay_partition(
        lake, dt_, _bootstrap(bootstrap, run_dir), table=table, rate=rate, progress=progress
    )
    typer.echo(f"sent {result.sent} {table} records to {result.topic} in {result.seconds:.1f}s")
    if result.failed:
        console.print(f"[red]{result.failed} records failed to send[/red]")
        raise typer.Exit(1)


Lake = Annotated[Path, typer.Option(help="The Parquet lake.")]
Day = Annotated[str, typer.Option("--dt", help="Partition to send, YYYY-MM-DD.")]
Rate = Annotated[
    float | None, typer.Option(help="Records per second; default as fast as possible.")
]


def _produce_command(table: str, what: str):
    """One `towerline produce` command per lake table; they differ only in the table."""

    def command(
        lake: Lake,
        dt_: Day,
        rate: Rate = None,
        bootstrap: Bootstrap = None,
        run_dir: RunDir = None,
        progress: bool = True,
    ) -> None:
        _replay(table, lake, dt_, rate, bootstrap, run_dir, progress)

    command.__doc__ = f"Send one day of {what} to the `{table}` topic, keyed by user_id."
    return command


produce_app.command("engagements")(_produce_command("engagements", "engagements"))
produce_app.command("offsite-conversions")(
    _produce_command("offsite_conversions", "offsite conversions")
)


@features_app.command("apply")
def features_apply(
    repo: RepoDir = Path("feature_repo"),
    online: Online = None,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    lake: Annotated[
        Path | None, typer.Option(help="The lake the offline sources read [env TOWERLINE_LAKE].")
    ] = None,
) -> None:
    """Register entities and feature views (like `feast apply`) and create the online tables."""
    from towerline.featurestore import apply_repo

    apply_repo(
        _store(repo, online, redis_url, data_dir), lake=lake or os.environ.get("TOWERLINE_LAKE")
    )
    typer.echo("feature repository applied")


@features_app.command("load-profiles")
def features_load_profiles(
    lake: Lake,
    repo: RepoDir = Path("feature_repo"),
    online: Online = None,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    progress: bool = True,
) -> None:
    """Write user_profile and pin_profile from the lake to the online store."""
    from towerline.featurestore import load_profiles

    counts = load_profiles(_store(repo, online, redis_url, data_dir), lake, progress=progress)
    typer.echo(json.dumps(counts))


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes everything.")] = Path(
        ".towerline/demo"
    ),
    users: int = 2_000,
    pins: int = 4_000,
    days: int = 7,
    bootstrap: Bootstrap = None,
) -> None:
    """End to end on embedded defaults: world → lake → Feast → broker → replay → consume."""
    from towerline.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        workdir=workdir,
        users=users,
        pins=pins,
        days=days,
        end_date=_yesterday(),
        bootstrap=bootstrap or os.environ.get("TOWERLINE_BOOTSTRAP_SERVERS"),
    )
    run_demo(cfg)


def _yesterday() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "your input or environment is wrong": one clear line, no traceback."""
    from schemas.errors import SchemaError
    from schemas.lake import LakeError
    from towerline.demo import DemoError
    from towerline.devbroker import BrokerError
    from towerline.featurestore import FeatureStoreError
    from towerline.replay import ReplayError

    return (
        SchemaError,
        LakeError,
        BrokerError,
        FeatureStoreError,
        ReplayError,
        DemoError,
        FileExistsError,
    )


def main() -> None:
    # kafka-python 3.0 loads its protocol files through a deprecated importlib API.
    warnings.filterwarnings("ignore", message=r"(read|open)_text is deprecated")
    try:
        app()
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
