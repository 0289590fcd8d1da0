"""`towerline batch encode`: parse arguments, call ``batch.encode_job.run_encode``, print.

torch, Beam and Feast are imported inside the command so `towerline --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from towerline.cli import options as o
from towerline.core import ledger

if TYPE_CHECKING:
    import feast


def batch_encode_cmd(
    ctx: typer.Context,
    lake: Annotated[
        Path, typer.Option(help="The Parquet lake (offsite_conversions in, states out).")
    ],
    dt_: Annotated[
        str,
        typer.Option(
            "--dt",
            callback=o.check_day,
            help="DATE, YYYY-MM-DD: encode history up to this partition.",
        ),
    ],
    registry: o.Registry,
    version: o.Version = "latest",
    model_name: o.ModelName = o.DEFAULT_MODEL_NAME,
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
            envvar="TOWERLINE_ONLINE_STORE",
            help="Online store: sqlite, redis or none (lake only); default sqlite.",
        ),
    ] = None,
    redis_url: o.RedisUrl = None,
    repo: o.Repo = o.REPO_DEFAULT,
    data_dir: o.DataDir = None,
    project: o.Project = None,
    progress: Annotated[bool, typer.Option(help="Print users done and rate while running.")] = True,
    ledger_path: o.Ledger = o.DEFAULT_LEDGER,
) -> None:
    """Encode every user's last L offsite events with one model version's encoder.

    Writes user_history_state to the lake (dt=DATE/VERSION/, published atomically),
    then to the Feast online store.

    Rerunning a DATE writes identical rows; a failed run leaves earlier rows untouched.

    Beam options go after `--`; with none, the job runs as if given
    `-- --runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing`.

    Prints one JSON summary last, and records the run in the ledger.
    """
    from batch.encode_job import EncodeConfig, run_encode

    day = o.parse_date(dt_)
    cfg = EncodeConfig(
        lake=lake,
        day=day,
        registry=registry,
        version=version,
        model_name=model_name,
        shards=shards,
        batch_size=batch_size,
        threads=threads,
        lookback_days=lookback_days,
        event_time=o.parse_instant(event_time, "--event-time") if event_time else None,
        progress=progress,
    )
    requested = None if version == "latest" else version
    with ledger.Run(
        ledger_path, "batch encode", partition=day, model_name=model_name, model_version=requested
    ) as run:
        store = _store(online, redis_url, repo, data_dir, project)
        summary = run_encode(cfg, pipeline_args=list(ctx.args), store=store)
        run.succeeded(**ledger.facts("batch encode", summary))
    typer.echo(json.dumps(summary))


def _store(
    online: str | None,
    redis_url: str | None,
    repo: Path,
    data_dir: Path | None,
    project: str | None,
) -> feast.FeatureStore | None:
    """The Feast store to write to, or None for ``--online none``; reached before encoding."""
    if online is not None and online.strip().lower() == "none":
        return None
    return o.checked_store(repo, online, redis_url, data_dir, project)
