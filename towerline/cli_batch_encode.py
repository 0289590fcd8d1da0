"""`towerline batch encode`: parse arguments, call ``batch.encode_job.run_encode``, print.

Register in towerline/cli.py (the context settings pass Beam options through)::

    from towerline.cli_batch_encode import CONTEXT_SETTINGS, batch_encode_cmd
    batch_app.command("encode", context_settings=CONTEXT_SETTINGS)(batch_encode_cmd)

torch, Beam and Feast are imported inside the command so `towerline --help` stays fast.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import feast

# Everything after `--` reaches the command as extra arguments: Beam pipeline options.
CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}
DEFAULT_MODEL_NAME = "two_tower"  # = model.artifacts.DEFAULT_MODEL_NAME (not imported: torch)


def batch_encode_cmd(
    ctx: typer.Context,
    lake: Annotated[
        Path, typer.Option(help="The Parquet lake (offsite_conversions in, states out).")
    ],
    dt_: Annotated[
        str, typer.Option("--dt", help="DATE, YYYY-MM-DD: encode history up to this partition.")
    ],
    registry: Annotated[Path, typer.Option(help="The model registry.")],
    version: Annotated[str, typer.Option(help="Model version, e.g. v3, or latest.")] = "latest",
    model_name: Annotated[
        str, typer.Option(help="Model name in the registry.")
    ] = DEFAULT_MODEL_NAME,
    shards: Annotated[
        int, typer.Option(min=1, help="Hash shards of user_id; each is encoded in one go.")
    ] = 64,
    batch_size: Annotated[int, typer.Option(min=1, help="Users per encoder call.")] = 256,
    threads: Annotated[
        int, typer.Option(min=1, help="torch threads per Beam worker (1 measured best here).")
    ] = 1,
    lookback_days: Annotated[
        int | None, typer.Option(min=1, help="Read only this many days up to DATE; default all.")
    ] = None,
    event_time: Annotated[
        str | None,
        typer.Option(
            help="event_timestamp of the rows, ISO 8601 with offset; default the midnight "
            "(UTC) that ends DATE, so reruns write identical rows."
        ),
    ] = None,
    online: Annotated[
        str | None,
        typer.Option(
            help="Online store: sqlite, redis or none (env TOWERLINE_ONLINE_STORE; default sqlite)."
        ),
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis host:port (env TOWERLINE_REDIS_URL).")
    ] = None,
    repo: Annotated[Path, typer.Option(help="The Feast repository.")] = Path("feature_repo"),
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the Feast registry and SQLite store live; default the repo's."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Print users done and rate while running.")] = True,
) -> None:
    """Encode every user's last L offsite events with one model version's encoder.

    Writes user_history_state to the lake (dt=DATE/VERSION/, published atomically),
    then to the Feast online store.

    Rerunning a DATE writes identical rows; a failed run leaves earlier rows untouched.

    Beam options go after `--`; with none, the job runs as if given
    `-- --runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing`.

    Prints one JSON summary last.
    """
    from batch.encode_job import EncodeConfig, run_encode

    cfg = EncodeConfig(
        lake=lake,
        day=_date(dt_, "--dt"),
        registry=registry,
        version=version,
        model_name=model_name,
        shards=shards,
        batch_size=batch_size,
        threads=threads,
        lookback_days=lookback_days,
        event_time=_instant(event_time),
        progress=progress,
    )
    store = _store(online, redis_url, repo, data_dir)
    summary = run_encode(cfg, pipeline_args=list(ctx.args), store=store)
    typer.echo(json.dumps(summary))


def _date(value: str, hint: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter("must be YYYY-MM-DD", param_hint=hint) from exc


def _instant(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter("must be ISO 8601", param_hint="--event-time") from exc
    if parsed.tzinfo is None:
        raise typer.BadParameter("needs a UTC offset, e.g. +00:00", param_hint="--event-time")
    return parsed


def _store(
    online: str | None, redis_url: str | None, repo: Path, data_dir: Path | None
) -> feast.FeatureStore | None:
    """The Feast store to write to, or None for ``--online none``."""
    if online is not None and online.strip().lower() == "none":
        return None
    from towerline.featurestore import open_store

    return open_store(repo, online=online, redis_url=redis_url, data_dir=data_dir)
