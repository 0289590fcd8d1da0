"""The training loop: in-batch softmax with logQ over windows of user histories.

``train_model`` is pure of I/O (no lake, no registry): it takes an ``ExampleSource`` and
a ``TrainConfig``, and returns the trained parts with their per-epoch history.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from model.artifacts import TwoTower
from model.batches import (
    ExampleSource,
    Negatives,
    TrainBatch,
    catalogue_inputs,
    epoch_batches,
    epoch_windows,
    log_sampling_prob,
    make_batch,
)
from model.config import TrainConfig
from model.loss import full_softmax_loss, in_batch_softmax_loss, sampled_softmax_loss

Validator = Callable[[TwoTower], dict[str, dict[str, float]]]
SELECT_ON = ("with_context", "recall@10")  # validation metric that picks the best epoch
T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass
class TrainResult:
    model: TwoTower  # the best epoch's weights when validated, else the last epoch's
    history: list[dict[str, Any]]  # one row per epoch
    best_epoch: int
    examples: int  # targets trained on, all epochs
    seconds: float  # time in training steps (validation excluded)

    @property
    def examples_per_s(self) -> float:
        return self.examples / max(self.seconds, 1e-9)


def batch_loss(
    model: TwoTower, batch: TrainBatch, temperature: float, catalogue: dict[str, Tensor] | None
) -> Tensor:
    """The softmax loss of one batch: over the catalogue (``catalogue`` = every pin's
    item-tower inputs), over its positives plus uniform negatives, or in-batch."""
    hidden = model.encoder.sequence(**batch.encoder)
    states = model.encoder.states_at(hidden, batch.rows, batch.positions)
    users = model.online(states, **batch.context)
    if catalogue is not None and batch.columns is not None:
        catalogue_emb = model.item_tower(**catalogue)
        return full_softmax_loss(users, catalogue_emb, batch.columns, temperature, batch.seen)
    items = model.item_tower(**batch.item)
    if batch.extra_item is not None and batch.extra_pins is not None:
        negatives = model.item_tower(**batch.extra_item)
        return sampled_softmax_loss(
            users, items, batch.pins, negatives, batch.extra_pins, batch.log_expected, temperature
        )
    return in_batch_softmax_loss(users, items, batch.pins, batch.log_q, temperature)


def train_step(
    model: TwoTower,
    batch: TrainBatch,
    optimizer: torch.optim.Optimizer,
    temperature: float,
    catalogue: dict[str, Tensor] | None = None,
) -> float:
    """One AdamW step on one batch; returns the loss."""
    loss = batch_loss(model, batch, temperature, catalogue)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return float(loss.detach())


def prefetched(make: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """``make(item)`` for each item, the next one built in a thread while the caller
    trains on the current one (numpy and torch both release the GIL)."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(make, items[0])
        for i in range(len(items)):
            current = future.result()
            if i + 1 < len(items):
                future = pool.submit(make, items[i + 1])
            yield current


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _epoch_line(row: dict[str, Any]) -> str:
    cells = [f"epoch {row['epoch']}", f"loss {row['loss']:.4f}"]
    for name, metrics in row.get("validation", {}).items():
        cells.append(f"{name} R@10 {metrics['recall@10']:.4f} R@50 {metrics['recall@50']:.4f}")
    return "  ".join(cells)


@dataclasses.dataclass
class _Run:
    """What every epoch of one training run shares."""

    source: ExampleSource
    tcfg: TrainConfig
    model: TwoTower
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    log_q: np.ndarray  # (n,) log sampling probability of each event's pin
    rng: np.random.Generator
    negatives: Negatives
    catalogue: dict[str, Tensor] | None  # every pin's item-tower inputs ("catalogue")
    averaged: WeightAverage | None  # tcfg.weight_average > 0


class WeightAverage:
    """Exponential moving average of the weights (Polyak averaging): validated and kept
    instead of the last step's weights, it smooths out the step-to-step noise that makes a
    single epoch's checkpoint a lucky or unlucky draw."""

    def __init__(self, model: TwoTower, decay: float) -> None:
        self.decay = decay
        self.params = model.parameters()
        self.average = [p.detach().clone() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        # Warm-up (as TensorFlow's ExponentialMovingAverage with num_updates): early on the
        # average follows the weights closely, so a short run is not an average of its
        # random initialisation.
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1.0 - decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Put the averaged weights into the model's parameters."""
        for param, avg in zip(self.params, self.average, strict=True):
            param.copy_(avg)


@contextlib.contextmanager
def _averaged_weights(run: _Run) -> Iterator[None]:
    """The averaged weights in the model for the duration (validation, checkpoint)."""
    if run.averaged is None:
        yield
        return
    live = [p.detach().clone() for p in run.averaged.params]
    run.averaged.copy_to_model()
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in zip(run.averaged.params, live, strict=True):
                param.copy_(value)


def _start(source: ExampleSource, tcfg: TrainConfig) -> _Run:
    torch.set_num_threads(tcfg.threads)
    model = TwoTower.build(source.cfg, seed=tcfg.seed).train()
    # fused: one pass over every parameter instead of ~10 elementwise kernels each.
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, fused=True
    )
    steps_per_epoch = max(math.ceil(len(source.log) / tcfg.batch_targets), 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(tcfg.warmup_steps, steps_per_epoch * tcfg.epochs)
    )
    log_q = log_sampling_prob(source.log.pin)
    uniform = tcfg.uniform_negatives or tcfg.batch_targets or 1
    negatives = Negatives.for_source(source, tcfg.negatives, uniform, tcfg.mask_seen)
    catalogue = catalogue_inputs(source.catalog) if tcfg.negatives == "catalogue" else None
    rng = np.random.default_rng(tcfg.seed)
    averaged = WeightAverage(model, tcfg.weight_average) if tcfg.weight_average > 0 else None
    return _Run(
        source, tcfg, model, optimizer, scheduler, log_q, rng, negatives, catalogue, averaged
    )


def _epoch(run: _Run, epoch: int, bar: Progress) -> dict[str, Any]:
    """One pass over every target; returns the epoch's row (loss, examples, seconds)."""
    windows = epoch_windows(run.source, run.rng)
    batches = epoch_batches(windows, run.rng, run.tcfg.batch_targets)
    seeds = run.rng.integers(0, 2**31, size=len(batches))
    make = partial(
        make_batch,
        run.source,
        windows,
        log_q=run.log_q,
        pseudo=run.tcfg.pseudo_context,
        negatives=run.negatives,
    )
    jobs = [(ids, int(seed)) for ids, seed in zip(batches, seeds, strict=True)]
    task = bar.add_task(f"epoch {epoch}/{run.tcfg.epochs}", total=len(batches), loss=0.0)
    run.model.train()
    started, losses, examples = time.perf_counter(), [], 0
    for batch in prefetched(lambda job: make(job[0], seed=job[1]), jobs):
        temperature = run.source.cfg.temperature
        losses.append(train_step(run.model, batch, run.optimizer, temperature, run.catalogue))
        run.scheduler.step()
        if run.averaged is not None:
            run.averaged.update()
        examples += len(batch.pins)
        bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
    return {
        "epoch": epoch,
        "loss": float(np.mean(losses)) if losses else 0.0,
        "examples": examples,
        "seconds": time.perf_counter() - started,
    }


def train_model(
    source: ExampleSource, tcfg: TrainConfig, validate: Validator | None = None
) -> TrainResult:
    """Train a fresh model on every event of ``source.log`` as a target. With
    ``validate``, keep the best epoch by ``SELECT_ON`` and stop after ``tcfg.patience``
    epochs without improvement."""
    tcfg = tcfg.resolve(len(source.log), len(source.catalog))
    run = _start(source, tcfg)
    history: list[dict[str, Any]] = []
    best, best_score, best_epoch = None, -1.0, 0
    with _progress(tcfg.progress) as bar:
        for epoch in range(1, tcfg.epochs + 1):
            row = _epoch(run, epoch, bar)
            if validate is not None:
                with _averaged_weights(run):
                    row["validation"] = validate(run.model)
                    score = row["validation"][SELECT_ON[0]][SELECT_ON[1]]
                    if score > best_score:
                        best, best_score, best_epoch = run.model.state(), score, epoch
            history.append(row)
            if tcfg.progress:
                bar.console.print(_epoch_line(row))
            if validate is not None and epoch - best_epoch >= tcfg.patience:
                break
    if best is not None:
        run.model.load_state(best)
    elif run.averaged is not None:
        run.averaged.copy_to_model()
    examples = sum(row["examples"] for row in history)
    seconds = sum(row["seconds"] for row in history)
    return TrainResult(run.model.eval(), history, best_epoch or len(history), examples, seconds)
