"""`towerline daily`: parse arguments, call ``batch.daily.run_daily``, print its steps.

Beam, torch and Feast are imported inside the command so `towerline --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from towerline.cli import options as o


def daily_cmd(
    lake: Annotated[
        Path, typer.Option(help="The Parquet lake (engagements and offsite in, states out).")
    ],
    registry: o.Registry,
    indexes: o.Indexes,
    date: Annotated[
        str | None,
        typer.Option(help="The day D, YYYY-MM-DD (UTC); default yesterday.", show_default=False),
    ] = None,
    half_life: o.HalfLife = "7d",
    top_m: Annotated[
        int, typer.Option(min=1, help="Pins kept in the corpus snapshot.")
    ] = 1_000_000,
    corpus_out: Annotated[
        Path | None,
        typer.Option(help="Write corpus snapshots under CORPUS_OUT/corpus/; default the lake."),
    ] = None,
    threads: Annotated[int, typer.Option(help="hnswlib build threads; -1 = all cores.")] = -1,
    repo: o.Repo = o.REPO_DEFAULT,
    online: o.Online = None,
    redis_url: o.RedisUrl = None,
    data_dir: o.DataDir = None,
    project: o.Project = None,
    model_name: o.ModelName = o.DEFAULT_MODEL_NAME,
    progress: o.Progress = True,
    ledger_path: o.Ledger = o.DEFAULT_LEDGER,
    pipeline_args: o.PipelineArgs = None,
) -> None:
    """The day's chain for the live version (the one serving.json names):
    corpus snapshot of D, history states of D, index of that version over
    the snapshot, publish.

    Idempotent and resumable: each step first checks whether its output for
    (D, version, inputs) exists and is intact, and skips itself if so: a
    snapshot of D with the same parameters; dt=D/VERSION states with their
    manifest and a successful encode in the ledger; a build of the version
    over that snapshot; serving.json naming that build. A rerun of a
    finished day builds nothing and changes nothing; a day killed midway
    resumes at its first unfinished step. Every step that runs records
    itself in the ledger, and the chain records itself as `daily`.

    Beam options after `--` go to every Beam step. Prints a table of the
    steps, then one JSON summary last.
    """
    from batch.daily import DailyConfig, live_version, run_daily
    from towerline.core.ann import SERVING, model_root, read_pointer

    day = o.parse_date(date, "--date") if date is not None else o.yesterday()
    serving = model_root(indexes, model_name) / SERVING
    live_version(read_pointer(serving), serving)  # refuse before reaching the online store
    cfg = DailyConfig(
        day=day,
        lake=lake,
        registry=registry,
        indexes=indexes,
        ledger=ledger_path,
        model_name=model_name,
        half_life_days=o.parse_duration(half_life, "--half-life") / 86_400,
        top_m=top_m,
        corpus_out=corpus_out,
        threads=threads,
        pipeline_args=tuple(pipeline_args or ()),
        progress=progress,
    )
    store = o.checked_store(repo, online, redis_url, data_dir, project)
    summary = run_daily(cfg, store)
    typer.echo(step_table(summary))
    typer.echo(json.dumps(summary))


def step_table(summary: dict[str, Any]) -> str:
    """The steps as aligned rows, then what the day ended with."""
    lines = [f"{'step':<9}{'status':<9}{'seconds':>9}"]
    lines += [f"{r['step']:<9}{r['status']:<9}{r['seconds']:>9.2f}" for r in summary["steps"]]
    lines.append(
        f"daily {summary['dt']} {summary['model_name']} {summary['model_version']}: "
        f"serving {summary['build']}, states {summary['states_partition']}, "
        f"corpus {summary['snapshot_id']}"
    )
    return "\n".join(lines)
