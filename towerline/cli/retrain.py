"""`towerline retrain`: parse arguments, call ``batch.daily.retrain_now``, print the gate.

The retrain options are declared here once and shared with `towerline daily`, whose cadence
runs the same retrain. torch, Beam and Feast are imported inside the command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from towerline.cli import options as o

HoldoutDays = Annotated[
    int,
    typer.Option(
        min=1,
        help="The held-out window: the last N days up to the retrain day. Neither version "
        "trained on it; both are judged on each user's last offsite event in it.",
    ),
]
TrainDays = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Days of the new version's training window, ending the day before the held-out "
        "window; default the live version's window length (else all).",
        show_default=False,
    ),
]
Epochs = Annotated[
    int | None,
    typer.Option(
        "--epochs", min=1, help="Training epochs; default the live version's.", show_default=False
    ),
]
GateMetric = Annotated[
    str,
    typer.Option(help="The gate metric, CONTEXT.METRIC (e.g. with_context.recall@50)."),
]
GateMargin = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="How much worse (absolute) the new version may be than the live one on the gate "
        "metric, NDCG@10 and the share of users with a state; more on any one rejects it.",
    ),
]
KeepVersions = Annotated[
    int,
    typer.Option(
        min=2,
        help="Versions kept servable (model, index builds, states); rejected candidates are "
        "pruned first, the live and previous versions never.",
    ),
]
GateUsers = Annotated[int, typer.Option(min=1, help="Held-out users sampled for the gate.")]


def retrain_options(
    holdout_days: int,
    train_days: int | None,
    epochs: int | None,
    gate_metric: str,
    gate_margin: float,
    keep_versions: int,
    gate_users: int,
) -> Any:
    """The ``batch.retrain.RetrainOptions`` the options say (a bad metric: exit 2)."""
    from batch.gate import GateConfig
    from batch.retrain import RetrainOptions

    context, _, metric = gate_metric.partition(".")
    if context not in ("with_context", "no_context") or not metric.startswith(("recall@", "ndcg@")):
        raise typer.BadParameter(
            "must be with_context|no_context . recall@K|ndcg@K with K 10 or 50",
            param_hint="--gate-metric",
        )
    if metric.split("@")[1] not in ("10", "50"):
        raise typer.BadParameter("K must be 10 or 50", param_hint="--gate-metric")
    return RetrainOptions(
        holdout_days=holdout_days,
        train_days=train_days,
        epochs=epochs,
        gate=GateConfig(metric=gate_metric, margin=gate_margin),
        keep_versions=keep_versions,
        gate_users=gate_users,
    )


def retrain_cmd(
    lake: Annotated[Path, typer.Option(help="The Parquet lake (training, held-out, states).")],
    registry: o.Registry,
    indexes: o.Indexes,
    until: Annotated[
        str | None,
        typer.Option(help="The retrain day D, YYYY-MM-DD (UTC); default yesterday."),
    ] = None,
    holdout_days: HoldoutDays = 1,
    train_days: TrainDays = None,
    epochs: Epochs = None,
    gate_metric: GateMetric = "with_context.recall@50",
    gate_margin: GateMargin = 0.01,
    keep_versions: KeepVersions = 3,
    gate_users: GateUsers = 20_000,
    half_life: o.HalfLife = "7d",
    top_m: Annotated[
        int, typer.Option(min=1, help="Pins kept in the corpus snapshot.")
    ] = 1_000_000,
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
    pipeline_args: o.PipelineArgs = None,
) -> None:
    """Train version N+1 on the newest window before a held-out window,
    judge it against the live version N on the same held-out events, and
    roll it out only if it passes.

    The gate passes when N+1 is not worse than N by more than --gate-margin
    on the gate metric, on NDCG@10 with context and on the share of users
    the encoder produced a state for. Passed: N+1's states of D are encoded
    (beside N's), its index built and it is published; a running `towerline
    serve` follows. Failed: N stays live and N+1 is marked rejected (`latest`
    never resolves to it). Either way the report lands in
    REGISTRY/<model>/gate/<N+1>.json and versions beyond --keep-versions are
    pruned (never the live or previous one). `towerline rollback` returns to N.

    Prints the gate table, then one JSON summary last.
    """
    from batch.daily import DailyConfig, live_version, retrain_now
    from towerline.core.ann import SERVING, model_root, read_pointer

    day = o.parse_date(until, "--until") if until is not None else o.yesterday()
    options = retrain_options(
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
        threads=threads,
        shards=shards,
        pipeline_args=tuple(pipeline_args or ()),
        progress=progress,
        retrain=options,
    )
    store = o.checked_store(repo, online, redis_url, data_dir, project)
    report = retrain_now(cfg, store)
    typer.echo(gate_summary(report))
    typer.echo(json.dumps(report))


def gate_summary(report: dict[str, Any]) -> str:
    """The gate table and what is served now."""
    from batch.gate import gate_table

    served = f"served before {report['live']['version']}, now {report['served']}"
    return f"{gate_table(report)}\n{report['decision']} {report['candidate']['version']}: {served}"
