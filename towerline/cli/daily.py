"""`towerline daily`: parse arguments, call ``batch.daily.run_daily``, print its steps.

Beam, torch and Feast are imported inside the command so `towerline --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from towerline.cli import options as o
from towerline.cli import retrain as r
from towerline.core.errors import TowerlineError


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
    shards: o.IndexShards = 1,
    repo: o.Repo = o.REPO_DEFAULT,
    online: o.Online = None,
    redis_url: o.RedisUrl = None,
    data_dir: o.DataDir = None,
    project: o.Project = None,
    model_name: o.ModelName = o.DEFAULT_MODEL_NAME,
    progress: o.Progress = True,
    ledger_path: o.Ledger = o.DEFAULT_LEDGER,
    retrain_every: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="Retrain before the day's chain when this long passed since the last retrain "
            "(the ledger says when), or, before any, since the live version's training data "
            "ends; whole days (e.g. 7d).",
        ),
    ] = "7d",
    retrain_off: Annotated[
        bool, typer.Option("--retrain-off", help="Never retrain in this run.")
    ] = False,
    holdout_days: r.HoldoutDays = 1,
    train_days: r.TrainDays = None,
    epochs: r.Epochs = None,
    gate_metric: r.GateMetric = "with_context.recall@50",
    gate_margin: r.GateMargin = 0.01,
    keep_versions: r.KeepVersions = 3,
    gate_users: r.GateUsers = 20_000,
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

    Cadence: first, when --retrain-every has passed, `towerline retrain
    --until D` runs (same options); a version that passes its gate is
    rolled out and the chain then finds its outputs built. A rejected
    candidate, or a retrain that fails, leaves the live version serving and
    the chain runs for it; a failed retrain ends the run with exit 1 after
    the chain.

    Beam options after `--` go to every Beam step. Prints a table of the
    steps, then one JSON summary last.
    """
    from batch.daily import DailyConfig, live_version, run_daily
    from towerline.core.ann import SERVING, model_root, read_pointer

    day = o.parse_date(date, "--date") if date is not None else o.yesterday()
    every = None if retrain_off else o.parse_duration(retrain_every, "--retrain-every") / 86_400
    if every is not None and every != int(every):
        raise typer.BadParameter("must be whole days, e.g. 7d", param_hint="--retrain-every")
    options = r.retrain_options(
        holdout_days, train_days, epochs, gate_metric, gate_margin, keep_versions, gate_users
    )
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
        shards=shards,
        pipeline_args=tuple(pipeline_args or ()),
        progress=progress,
        retrain_every_days=None if every is None else int(every),
        retrain=options,
    )
    store = o.checked_store(repo, online, redis_url, data_dir, project)
    summary = run_daily(cfg, store)
    typer.echo(step_table(summary))
    typer.echo(json.dumps(summary))
    if summary["retrain"].get("error"):
        raise TowerlineError(
            f"the retrain failed ({summary['retrain']['error']}); the day's chain ran for "
            f"{summary['model_version']}"
        )


def step_table(summary: dict[str, Any]) -> str:
    """The steps as aligned rows, then what the day ended with."""
    retrain = summary.get("retrain") or {}
    lines = []
    if retrain.get("due"):
        if "decision" in retrain:
            outcome = f"{retrain['candidate']} {retrain['decision']}"
        else:
            outcome = f"failed: {retrain.get('error')}"
        lines.append(f"retrain {outcome} ({retrain['why']})")
    lines.append(f"{'step':<9}{'status':<9}{'seconds':>9}")
    lines += [f"{r['step']:<9}{r['status']:<9}{r['seconds']:>9.2f}" for r in summary["steps"]]
    lines.append(
        f"daily {summary['dt']} {summary['model_name']} {summary['model_version']}: "
        f"serving {summary['build']}, states {summary['states_partition']}, "
        f"corpus {summary['snapshot_id']}"
    )
    return "\n".join(lines)
