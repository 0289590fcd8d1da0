"""Full-ranking evaluation of a two-tower model (and of popularity) on held-out targets.

Each query is one held-out event k of the full log; history = the user's events
before it (``ModelConfig.history_cutoff``, last L). Two contexts: "with_context" = the
request context of a related-pins surface: the subject pin (``ModelConfig.subject_pin``:
the user's newest engagement before k, or without engagements the previous conversion),
with the user's demographics and engagements strictly before k; "no_context" = the
history state alone (the zero context vector the model saw when its context was dropped
in training).
Items = the whole catalogue; the user's earlier pins are excluded.
Scoring is exact brute force ``U @ V.T`` in batches of users.

``state_share``: the share of queries whose history state the encoder produced (a user with
history whose state is finite): the gate of ``towerline retrain`` checks it beside the
ranking metrics, so an encoder that returns NaN for some users cannot pass on the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from model.artifacts import TwoTower
from model.batches import ExampleSource, context_inputs, user_context
from model.features import build_encoder_inputs
from model.protocol import metrics_from_ranks, rank_stats
from model.tables import PinTable

CONTEXTS = ("with_context", "no_context")


@torch.inference_mode()
def item_embeddings(model: TwoTower, catalog: PinTable, batch: int = 8192) -> Tensor:
    """(M, dim) embeddings of every catalogue pin, in catalogue order."""
    out = []
    for lo in range(0, len(catalog), batch):
        sl = slice(lo, lo + batch)
        out.append(
            model.item_tower(
                torch.from_numpy(catalog.pin_id[sl]),
                torch.from_numpy(catalog.interest_ids[sl]),
                torch.from_numpy(catalog.interest_conf[sl]),
            )
        )
    return torch.cat(out) if out else torch.zeros(0, model.cfg.dim)


@torch.inference_mode()
def user_embeddings(
    model: TwoTower, source: ExampleSource, targets: np.ndarray
) -> dict[str, Tensor]:
    """Query embeddings (Q, dim) per context for held-out events ``targets`` (Q,)."""
    src = source.src[targets]
    enc = build_encoder_inputs(source.seq, source.starts[targets], src + 1, source.cfg.max_len)
    state = model.encoder(**enc.tensors())
    user_part = user_context(source, targets)
    subject = source.subject_ids[targets], source.subject_conf[targets]
    with_ctx = context_inputs(*subject, user_part)
    return {
        "with_context": model.online(state, **with_ctx),
        "no_context": model.online.without_context(state),
    }


@torch.inference_mode()
def state_share(
    model: TwoTower, source: ExampleSource, targets: np.ndarray, batch: int = 1024
) -> float:
    """Share of held-out events ``targets`` (Q,) with at least one earlier event whose
    encoder state (Q, d_model) is finite (1.0 for a sound encoder; 0.0 for none)."""
    produced = 0
    for lo in range(0, len(targets), batch):
        rows = targets[lo : lo + batch]
        src = source.src[rows]
        enc = build_encoder_inputs(source.seq, source.starts[rows], src + 1, source.cfg.max_len)
        state = model.encoder(**enc.tensors())
        finite = torch.isfinite(state).all(dim=1).numpy()
        produced += int(np.count_nonzero(finite & (src >= source.starts[rows])))
    return produced / max(len(targets), 1)


def history_columns(
    source: ExampleSource, event_cols: np.ndarray, targets: np.ndarray
) -> list[np.ndarray]:
    """Catalogue columns of each query's earlier events (to exclude from its ranking);
    ``event_cols`` (n,) = catalogue column of every event of ``source.log``."""
    return [event_cols[s:k] for s, k in zip(source.starts[targets], targets, strict=True)]


def seen_share(source: ExampleSource, targets: np.ndarray) -> float:
    """Share of ``targets`` whose pin the user already had before (repeats)."""
    log, hits = source.log, 0
    for start, k in zip(source.starts[targets], targets, strict=True):
        hits += bool(np.any(log.pin[start:k] == log.pin[k]))
    return hits / max(len(targets), 1)


def _batch_scores(
    model: TwoTower | None,
    items: Tensor | None,
    source: ExampleSource,
    batch: np.ndarray,
    popularity: Tensor | None,
) -> dict[str, Tensor]:
    """Scores of the queries ``batch`` (Q,): (Q, M) per context, (M,) for popularity."""
    scores: dict[str, Tensor] = {}
    if model is not None and items is not None:
        users = user_embeddings(model, source, batch)
        scores = {name: users[name] @ items.T for name in CONTEXTS}
    if popularity is not None:
        scores["popularity"] = popularity  # shared by every row: ranked by one sort
    return scores


def evaluate_targets(
    model: TwoTower | None,
    source: ExampleSource,
    targets: np.ndarray,
    popularity: Tensor | None = None,
    ks: Sequence[int] = (10, 50),
    batch_users: int = 1024,
    seen_target: str = "miss",
) -> dict[str, dict[str, float]]:
    """Metrics per context (and for ``popularity`` (M,) scores when given) over the
    held-out events ``targets`` (Q,) of ``source.log`` (``seen_target``: see
    ``model.protocol``)."""
    items = item_embeddings(model.eval(), source.catalog) if model is not None else None
    event_cols, found = source.catalog.index_of(source.log.pin)
    if not found[targets].all():
        raise ValueError("every target pin must be in the catalogue (use PinTable.with_pins)")
    names = (CONTEXTS if model is not None else ()) + (
        ("popularity",) if popularity is not None else ()
    )
    stats: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in names}
    for lo in range(0, len(targets), batch_users):
        batch = targets[lo : lo + batch_users]
        cols = torch.from_numpy(event_cols[batch])
        exclude = history_columns(source, event_cols, batch)
        for name, scores in _batch_scores(model, items, source, batch, popularity).items():
            stats[name].append(rank_stats(scores, cols, exclude, seen_target))
    empty = torch.zeros(0, dtype=torch.long)
    return {
        name: metrics_from_ranks(
            torch.cat([empty] + [g for g, _ in parts]),
            torch.cat([empty] + [t for _, t in parts]),
            ks,
        )
        for name, parts in stats.items()
    }
