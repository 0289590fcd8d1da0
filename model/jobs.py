"""The train and evaluate jobs: lake -> model -> registry, registry + lake -> metrics.

These are the edges that do I/O; the CLI only parses arguments and calls them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.artifacts import load_model, save_model
from model.batches import ExampleSource, make_source
from model.config import ModelConfig, TrainConfig
from model.evaluate import evaluate_targets, seen_share
from model.lake_io import LakeData, Window, load_lake
from model.protocol import leave_one_out_split, popularity_scores
from model.registry import load_document
from model.train import Validator, train_model
from schemas.lake import LakeError
from towerline.core.contracts import DEFAULT_MODEL_NAME

HOLDOUTS = ("none", "leave-one-out")


def _sources(
    data: LakeData, cfg: ModelConfig, holdout: str, tcfg: TrainConfig
) -> tuple[ExampleSource, Validator | None]:
    """Training source (all events, or the leave-one-out training part) and, with a
    holdout, a validator on the validation targets of up to ``tcfg.val_users`` users."""
    full = data.offsite
    if holdout == "none":
        return make_source(full, data.catalog, data.engagements, data.users, cfg), None
    if holdout != "leave-one-out":
        raise ValueError(f"holdout must be one of {HOLDOUTS}, got {holdout!r}")
    split = leave_one_out_split(full.user, full.ts)
    train = make_source(
        full.take(np.sort(split.train)), data.catalog, data.engagements, data.users, cfg
    )
    everything = make_source(full, data.catalog, data.engagements, data.users, cfg)
    rng = np.random.default_rng(tcfg.seed)
    sample = np.sort(rng.choice(split.valid, min(tcfg.val_users, len(split.valid)), replace=False))
    return train, lambda model: evaluate_targets(model, everything, sample, ks=(10, 50))


def run_train(
    lake: Path,
    registry: Path,
    until: dt.date | None = None,
    days: int | None = None,
    holdout: str = "none",
    model_name: str = DEFAULT_MODEL_NAME,
    keep: int = 3,
    tcfg: TrainConfig | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on the lake window and register the model; returns a JSON-able summary."""
    tcfg = tcfg or TrainConfig()
    overrides = model_overrides or {}
    data = load_lake(lake, until, days, cfg=ModelConfig(**overrides))
    cfg = ModelConfig.for_data(len(data.catalog), data.catalog.max_interest_id, **overrides)
    source, validate = _sources(data, cfg, holdout, tcfg)
    # auto epochs / batch size / negatives, saved as resolved
    tcfg = tcfg.resolve(len(source.log), len(source.catalog))
    result = train_model(source, tcfg, validate)
    best = result.history[result.best_epoch - 1]
    metrics = {
        "loss": best["loss"],
        "validation": best.get("validation"),
        "best_epoch": result.best_epoch,
        "examples": result.examples,
        "train_seconds": round(result.seconds, 2),
        "examples_per_s": round(result.examples_per_s, 1),
        "history": result.history,
    }
    window = {
        **data.window.to_json(),
        "holdout": holdout,
        "events": len(data.offsite),
        "train_events": len(source.log),
        "pins": len(data.catalog),
    }
    version = save_model(registry, result.model, window, metrics, model_name, keep, tcfg.to_json())
    return {"model_name": model_name, "model_version": version, **window, **metrics}


def run_evaluate(
    lake: Path,
    registry: Path,
    version: str | None = None,
    ks: tuple[int, ...] = (10, 50),
    model_name: str = DEFAULT_MODEL_NAME,
    batch_users: int = 1024,
    threads: int | None = None,
    window: Window | None = None,
    seen_target: str = "miss",
) -> dict[str, Any]:
    """Leave-one-out test metrics of a registered version on its own training window
    (or ``window``), with and without subject-pin context, and for most-popular."""
    if threads:
        torch.set_num_threads(threads)
    if not Path(lake).is_dir():
        raise LakeError(f"no lake at {lake}; pass the --lake the version was trained on")
    version, model = load_model(registry, version, model_name)
    trained_on = load_document(registry, model_name, version, "window")
    window = window or Window.from_json(trained_on)
    data = load_lake(lake, window=window, cfg=model.cfg)
    full = data.offsite
    split = leave_one_out_split(full.user, full.ts)
    _require_targets(lake, window, len(full), len(split.test), f"{model_name} {version}")
    source = make_source(full, data.catalog, data.engagements, data.users, model.cfg)
    train_cols, _ = data.catalog.index_of(full.pin[split.train])
    popularity = popularity_scores(train_cols, len(data.catalog))
    targets = np.sort(split.test)
    metrics = evaluate_targets(
        model, source, targets, popularity, ks, batch_users, seen_target=seen_target
    )
    return {
        **metrics,
        "users": len(split.test),
        "pins": len(data.catalog),
        "model_version": version,
        "window": window.to_json(),
        "trained_with_holdout": trained_on.get("holdout"),
        "seen_target": seen_target,
        "seen_target_share": round(seen_share(source, targets), 4),
    }


def _require_targets(lake: Path, window: Window, events: int, targets: int, model: str) -> None:
    """Metrics over no targets would print as 0.0 and read as a (terrible) result."""
    span = f"{window.start}..{window.end}"
    if events == 0:
        raise LakeError(
            f"no offsite_conversions events in {lake} in the window {span} of {model}; "
            "pass the lake it was trained on"
        )
    if targets == 0:
        raise LakeError(
            f"no user in {lake} has the 3 offsite events in {span} that leave-one-out needs "
            f"({events} events); nothing to evaluate {model} on"
        )
