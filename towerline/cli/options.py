"""The option vocabulary of every `towerline` command, and the only reader of the environment.

The same thing has the same name in every command (``--lake``, ``--registry``,
``--indexes``, ``--repo``, ``--online``, ``--redis-url``, ``--data-dir``, ``--model-name``,
``--bootstrap-servers``, ``--half-life`` as a duration, ``--dt`` as a day). Environment
variables are read by typer through ``envvar=`` on these options, or here by
``environ()``: nowhere below the CLI.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from towerline.core.contracts import DEFAULT_MODEL_NAME  # noqa: F401 - the default of --model-name
from towerline.core.errors import UnavailableError
from towerline.core.names import name_problem, version_problem

if TYPE_CHECKING:
    import feast

ENV_BOOTSTRAP = "TOWERLINE_BOOTSTRAP_SERVERS"
ENV_RUN_DIR = "TOWERLINE_RUN_DIR"
DEFAULT_RUN_DIR = Path(".towerline/run")
ENV_LEDGER = "TOWERLINE_LEDGER"
DEFAULT_LEDGER = Path(".towerline/ledger.jsonl")
REPO_DEFAULT = Path(__file__).resolve().parents[2] / "feature_repo"

# Everything after `--` reaches a Beam command as extra arguments: pipeline options.
BEAM_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def environ() -> Mapping[str, str]:
    """The process environment, for the entry points that resolve defaults themselves."""
    return os.environ


# --- parsers (one per kind of value) ------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str, option: str = "duration") -> float:
    """Seconds (> 0) in ``"90"``, ``"90s"``, ``"5m"``, ``"12h"``, ``"1d"`` or ``"250ms"``."""
    match = _DURATION.match(text)
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"] if match else math.nan
    if not seconds > 0:
        raise typer.BadParameter(
            f"{text!r} is not a positive duration like 250ms, 30s, 5m, 12h or 1d",
            param_hint=option,
        )
    return seconds


def parse_date(text: str, option: str = "--dt") -> dt.date:
    """A calendar day written ``YYYY-MM-DD``: the lake's own ``dt=`` parser, for options."""
    from schemas.lake import LakeError, parse_dt

    try:
        return parse_dt(text)
    except LakeError:
        raise typer.BadParameter(f"{text!r} is not a date YYYY-MM-DD", param_hint=option) from None


def parse_instant(text: str, option: str) -> dt.datetime:
    """An ISO 8601 instant with a UTC offset."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not ISO 8601", param_hint=option) from None
    if parsed.tzinfo is None:
        raise typer.BadParameter("needs a UTC offset, e.g. +00:00", param_hint=option)
    return parsed


def yesterday() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def _refuse(problem: str | None, option: str) -> None:
    if problem:
        raise typer.BadParameter(problem, param_hint=option)


def _model_name(value: str) -> str:
    _refuse(name_problem(value), "--model-name")
    return value


def _version(value: str) -> str:
    _refuse(version_problem(value, allow_latest=True), "--version")
    return value


def exact_version(value: str) -> str:
    """An option callback: a version name ``vN`` (no ``latest``)."""
    _refuse(version_problem(value), "--version")
    return value


def check_half_life(value: str) -> str:
    parse_duration(value, "--half-life")
    return value


def check_day(value: str) -> str:
    parse_date(value, "--dt")
    return value


# --- shared options -----------------------------------------------------------------------

Lake = Annotated[Path, typer.Option(help="The Parquet lake.")]
Registry = Annotated[Path, typer.Option(help="The model registry (REGISTRY/<model-name>/vN/).")]
Indexes = Annotated[
    Path, typer.Option(help="The index store (INDEXES/<model-name>/<version>-<built_at>/).")
]
ModelName = Annotated[
    str,
    typer.Option(callback=_model_name, help="Model name: a plain name, used as a directory."),
]
Version = Annotated[str, typer.Option(callback=_version, help="Model version, e.g. v3, or latest.")]
Day = Annotated[str, typer.Option("--dt", callback=check_day, help="The day, YYYY-MM-DD (UTC).")]
HalfLife = Annotated[
    str,
    typer.Option(
        metavar="DURATION",
        callback=check_half_life,
        help="Half-life of time-decayed engagement: after it an event counts half "
        "(e.g. 12h, 1d, 7d).",
    ),
]
IndexShards = Annotated[
    int,
    typer.Option(
        "--shards",
        min=1,
        help="Split the index into S shards by pin-id hash, one set published and served "
        "whole (queried shard by shard, merged by score); 1 = one index.",
    ),
]
Repo = Annotated[Path, typer.Option(help="The Feast repository.")]
Online = Annotated[
    str | None,
    typer.Option(
        envvar="TOWERLINE_ONLINE_STORE", help="Online store: sqlite or redis; default sqlite."
    ),
]
RedisUrl = Annotated[
    str | None,
    typer.Option(
        envvar="TOWERLINE_REDIS_URL",
        help="Redis host:port or redis://host:port/db, with --online redis; "
        "default 127.0.0.1:6379.",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(help="Where the Feast registry and SQLite store live; default feature_repo/data."),
]
Project = Annotated[
    str | None,
    typer.Option(
        envvar="TOWERLINE_FEAST_PROJECT",
        help="Feast project; Redis keys end with it, so projects on one Redis never collide.",
    ),
]
Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        envvar=ENV_BOOTSTRAP,
        help="Kafka bootstrap servers, e.g. kafka-1:9092,kafka-2:9092; default: the running "
        "dev broker.",
    ),
]
RunDir = Annotated[
    Path | None,
    typer.Option(envvar=ENV_RUN_DIR, help="Where the dev broker records its port and PID."),
]
PipelineArgs = Annotated[
    list[str] | None,
    typer.Argument(
        help="Beam pipeline options, after `--`: e.g. -- --runner=DirectRunner "
        "--direct_num_workers=2 --direct_running_mode=multi_processing.",
        show_default=False,
    ),
]
Progress = Annotated[bool, typer.Option(help="Show progress while running.")]
Ledger = Annotated[
    Path,
    typer.Option(
        "--ledger",
        envvar=ENV_LEDGER,
        help="The run ledger every batch step appends to (one JSON line per run, success or "
        "failure); the freshness monitor and the daily chain read it.",
    ),
]
StatesLake = Annotated[
    Path, typer.Option("--lake", help="The lake holding user_history_state/ partitions.")
]
OnlineCheck = Annotated[
    bool, typer.Option(help="Also read a sample of history states from the online store.")
]


# --- resolvers ----------------------------------------------------------------------------


def run_dir(value: Path | None) -> Path:
    """The dev broker's run directory: the flag (or its env var), else ``.towerline/run``."""
    return Path(value) if value is not None else DEFAULT_RUN_DIR


class BootstrapError(UnavailableError):
    """No Kafka cluster was named and no dev broker is running."""


def bootstrap(value: str | None, run_dir_value: Path | None) -> str:
    """Bootstrap servers: the flag (or ``$TOWERLINE_BOOTSTRAP_SERVERS``), else the dev broker."""
    from towerline import devbroker

    if value and value.strip():
        return value.strip()
    where = run_dir(run_dir_value)
    info = devbroker.status(where)
    if info is not None:
        return info.bootstrap
    raise BootstrapError(
        f"no Kafka bootstrap servers: no dev broker is running in {where}. "
        f"Run `towerline dev up`, or pass --bootstrap-servers host:port, or set {ENV_BOOTSTRAP}."
    )


def feature_store(
    repo: Path,
    online: str | None,
    redis_url: str | None,
    data_dir: Path | None,
    project: str | None = None,
) -> feast.FeatureStore:
    """The Feast store the options name (``${VAR}`` in the yaml expanded from the env)."""
    from towerline.core.featurestore import open_store

    return open_store(
        repo,
        online=online,
        redis_url=redis_url,
        data_dir=data_dir,
        project=project,
        environ=environ(),
    )


def checked_store(
    repo: Path,
    online: str | None,
    redis_url: str | None,
    data_dir: Path | None,
    project: str | None = None,
) -> feast.FeatureStore:
    """``feature_store(...)``, reached once now: an unreachable Redis is named at start."""
    from towerline.core.featurestore import check_online

    store = feature_store(repo, online, redis_url, data_dir, project)
    check_online(store)
    return store
