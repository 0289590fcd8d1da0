"""`towerline train` and `towerline evaluate`: parse arguments, call model.jobs, print.

Register in towerline/cli.py with ``app.command("train")(train_cmd)`` and
``app.command("evaluate")(evaluate_cmd)``. torch is imported inside the commands so
`towerline --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from model.config import HISTORY_CUTOFFS, NEGATIVES, SUBJECT_PINS, ModelConfig, TrainConfig
from towerline.cli import options as o

Threads = Annotated[
    int,
    typer.Option(
        min=1,
        help="torch threads. 1 is the measured best on 2 cores: the next batch is built on "
        "the other core meanwhile.",
    ),
]


def train_cmd(
    lake: Annotated[Path, typer.Option(help="The Parquet lake to train on.")],
    registry: Annotated[
        Path,
        typer.Option("--registry", "--out", help="The model registry to add the new version to."),
    ],
    until: Annotated[
        str | None,
        typer.Option(
            callback=lambda v: v and o.check_day(v),
            help="Last dt partition of the training window, YYYY-MM-DD; default newest.",
        ),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(min=1, help="Window length in days ending at --until; default all."),
    ] = None,
    holdout: Annotated[
        str,
        typer.Option(
            help="none: train on every event. leave-one-out: hold out each user's last two "
            "events (validation, test) as `towerline evaluate` does; the best epoch by "
            "validation Recall@10 is kept."
        ),
    ] = "none",
    epochs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Most epochs (early stop with a holdout); default: from the data size "
            "(~4M targets in all, 3 to 40 epochs).",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="Positives per step; each is a negative for the others. Default: from the "
            "data size (power of two <= examples / 128, 256 to 2048).",
        ),
    ] = None,
    lr: Annotated[
        float, typer.Option(help="AdamW peak learning rate (warm-up, cosine decay).")
    ] = 2e-3,
    context_dropout: Annotated[
        float,
        typer.Option(help="Probability of dropping the whole subject-pin context in training."),
    ] = 0.5,
    max_len: Annotated[int, typer.Option(min=1, help="Offsite events the encoder reads (L).")] = 50,
    history_cutoff: Annotated[
        str,
        typer.Option(
            help="log: an example's history state has seen every offsite event before it in "
            "the log (time, then arrival: events stamped in the same second count in arrival "
            "order). event: only those strictly earlier in time. day: only those before its "
            "UTC day, as served from the daily encode job."
        ),
    ] = ModelConfig().history_cutoff,
    subject_pin: Annotated[
        str,
        typer.Option(
            help="The subject pin of a training or evaluation example: engagement = the "
            "user's newest on-platform engagement before it (what a related-pins request "
            "carries); previous = the user's previous offsite conversion; auto = engagement "
            "when the lake has engagements, else previous."
        ),
    ] = "auto",
    negatives: Annotated[
        str,
        typer.Option(
            help="in_batch: the batch's other positives, logQ-corrected. mixed: plus as many "
            "uniformly drawn catalogue pins. catalogue: an exact softmax over every pin. "
            "auto: catalogue up to 4,096 pins, else in_batch."
        ),
    ] = TrainConfig().negatives,
    mask_seen: Annotated[
        bool,
        typer.Option(
            help="With the exact softmax (catalogue): leave the pins of a target's earlier "
            "events out of its softmax, as evaluation and serving's seen-filter never rank "
            "them."
        ),
    ] = TrainConfig().mask_seen,
    request_gap: Annotated[
        bool,
        typer.Option(
            help="Give the online tower the request gap: the seconds from the newest event "
            "in the user's history state to the request (log2 buckets); serving reads it "
            "from user_history_state.last_event_ts_ms. Off by default: README, "
            '"Retrieval quality".'
        ),
    ] = ModelConfig().request_gap,
    dim: Annotated[int, typer.Option(min=2, help="Embedding dimension of both towers.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, shuffling and dropout.")] = 0,
    threads: Threads = 1,
    model_name: o.ModelName = o.DEFAULT_MODEL_NAME,
    keep: Annotated[int, typer.Option(min=1, help="Versions kept; older ones are deleted.")] = 3,
    progress: Annotated[bool, typer.Option(help="Show a progress bar with the loss.")] = True,
) -> None:
    """Train the two-tower model on a lake window and register it as a new version.

    Prints one JSON summary (version, window, loss, validation metrics, examples/s) last."""
    from model.jobs import HOLDOUTS, run_train

    if holdout not in HOLDOUTS:
        raise typer.BadParameter(f"must be one of {', '.join(HOLDOUTS)}", param_hint="--holdout")
    for value, allowed, hint in (
        (history_cutoff, HISTORY_CUTOFFS, "--history-cutoff"),
        (subject_pin, SUBJECT_PINS, "--subject-pin"),
        (negatives, NEGATIVES, "--negatives"),
    ):
        if value not in allowed:
            raise typer.BadParameter(f"must be one of {', '.join(allowed)}", param_hint=hint)
    tcfg = TrainConfig(
        epochs=epochs,
        batch_targets=batch_size,
        lr=lr,
        seed=seed,
        threads=threads,
        progress=progress,
        negatives=negatives,
        mask_seen=mask_seen,
    )
    overrides = {
        "context_dropout": context_dropout,
        "max_len": max_len,
        "dim": dim,
        "history_cutoff": history_cutoff,
        "subject_pin": subject_pin,
        "request_gap": request_gap,
    }
    summary = run_train(
        lake,
        registry,
        until=o.parse_date(until, "--until") if until else None,
        days=days,
        holdout=holdout,
        model_name=model_name,
        keep=keep,
        tcfg=tcfg,
        model_overrides=overrides,
    )
    summary.pop("history", None)
    typer.echo(json.dumps(summary))


def evaluate_cmd(
    lake: Annotated[Path, typer.Option(help="The Parquet lake (the version's window is read).")],
    registry: o.Registry,
    version: o.Version = "latest",
    k: Annotated[
        str, typer.Option(help="Cut-offs for Recall@K and NDCG@K, comma-separated.")
    ] = "10,50",
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the metrics as one JSON object, last.")
    ] = False,
    seen_target: Annotated[
        str,
        typer.Option(
            help="A target the user already had (a repeat) is excluded with the rest of the "
            "history: miss counts it as a miss, as serving's seen-filter would; rank ranks "
            "it anyway (SASRec's convention; inflates every model on repeat-heavy data)."
        ),
    ] = "miss",
    batch_users: Annotated[int, typer.Option(min=1, help="Users scored per batch.")] = 1024,
    threads: Threads = 1,
    model_name: o.ModelName = o.DEFAULT_MODEL_NAME,
) -> None:
    """Leave-one-out full-ranking evaluation: each user's last offsite event is the
    target, ranked among all pins minus the user's history, with the subject-pin context,
    without context, and for a most-popular baseline (Recall@K, NDCG@K, MRR@10)."""
    from model.jobs import run_evaluate

    ks = _ks(k)
    if seen_target not in ("miss", "rank"):
        raise typer.BadParameter("must be miss or rank", param_hint="--seen-target")
    result = run_evaluate(
        lake,
        registry,
        version,
        ks,
        model_name,
        batch_users=batch_users,
        threads=threads,
        seen_target=seen_target,
    )
    for name in ("with_context", "no_context", "popularity"):
        cells = "  ".join(f"{metric} {value:.4f}" for metric, value in result[name].items())
        typer.echo(f"{name:<13} {cells}")
    typer.echo(f"users {result['users']}  pins {result['pins']}  version {result['model_version']}")
    if json_out:
        typer.echo(json.dumps(result))


def _ks(value: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError as exc:
        raise typer.BadParameter("must be comma-separated integers", param_hint="--k") from exc
    if not ks or min(ks) < 1:
        raise typer.BadParameter("needs at least one K >= 1", param_hint="--k")
    return ks
