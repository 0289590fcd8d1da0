"""Training examples as batches of windows, vectorised.

An example is (history before t, positive pin at t): the history state covers the
user's events strictly before t (``history_cutoff="event"``) or before t's UTC day
("day", as served by the daily encode job); the pseudo-context, demographics and
real-time engagements are always those strictly before t. Each user's events are
cut into windows of at most L events (boundaries shifted at random every epoch); one
causal encoder pass over a window yields the history state of every target whose last
history event lies in it, so an epoch visits every event once as a target at the cost of
about one encoder pass per L events. A window sees only its own events, so a target near
a window start gets a shorter history than at serving; the random shifts vary which.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from model.config import HISTORY_CUTOFFS, PSEUDO_CONTEXTS, ModelConfig
from model.features import (
    RecentEngagements,
    SequenceEvents,
    build_encoder_inputs,
    history_index,
    sequence_events,
)
from model.tables import EventLog, PinTable, UserTable
from towerline.core.contracts import PAD_INTEREST


@dataclasses.dataclass(frozen=True)
class ExampleSource:
    """A sorted event log with everything an example of it needs (n events)."""

    log: EventLog
    seq: SequenceEvents
    starts: np.ndarray  # (n,) index of the first event of each event's user
    src: np.ndarray  # (n,) last event in the history state (cfg.history_cutoff), -1: none
    prev: np.ndarray  # (n,) last earlier event (ties ordered as the history's), -1 if none
    recent: RecentEngagements  # the real-time sequence source
    users: UserTable
    catalog: PinTable
    cfg: ModelConfig
    subject_ids: np.ndarray  # (n, 3) int64 interests of each event's subject pin
    subject_conf: np.ndarray  # (n, 3) float32, all 0 where the event has no subject pin
    subject_rule: str  # "previous" | "engagement" (cfg.subject_pin resolved)


def make_source(
    log: EventLog, catalog: PinTable, engagements: EventLog, users: UserTable, cfg: ModelConfig
) -> ExampleSource:
    seq = sequence_events(log, catalog)
    prev = history_index(log, min(HISTORY_CUTOFFS[cfg.history_cutoff], 1))
    recent = RecentEngagements.from_log(engagements)
    rule = resolve_subject_rule(cfg.subject_pin, len(engagements))
    subject = subject_interests(log, seq, prev, recent, catalog, rule)
    return ExampleSource(
        log,
        seq,
        log.user_starts(),
        history_index(log, HISTORY_CUTOFFS[cfg.history_cutoff]),
        prev,
        recent,
        users,
        catalog,
        cfg,
        *subject,
        rule,
    )


def resolve_subject_rule(subject_pin: str, engagements: int) -> str:
    """``ModelConfig.subject_pin`` -> "previous" | "engagement" for data with
    ``engagements`` on-platform events ("auto" needs some to pick "engagement")."""
    if subject_pin == "auto":
        return "engagement" if engagements else "previous"
    return subject_pin


def subject_interests(
    log: EventLog,
    seq: SequenceEvents,
    prev: np.ndarray,
    recent: RecentEngagements,
    catalog: PinTable,
    rule: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Interests (n, 3) and confidences (n, 3) of each event's subject pin: the previous
    conversion ``prev`` (n,), or the user's newest engagement strictly before the event
    (``rule``); PAD / 0 where there is none."""
    if rule == "engagement":
        pins, mask = recent.last_n(log.user, log.ts, 1)
        ids, conf = catalog.lookup(pins[:, 0])
        none = ~mask[:, 0:1]
    else:
        safe = np.maximum(prev, 0)
        ids, conf = seq.interest_ids[safe], seq.interest_conf[safe]
        none = (prev < 0)[:, None]
    return (
        np.where(none, PAD_INTEREST, ids).astype(np.int64),
        np.where(none, 0.0, conf).astype(np.float32),
    )


def log_sampling_prob(pins: np.ndarray) -> np.ndarray:
    """(n,) float32 log of each event's pin frequency among ``pins`` (n,): the logQ term
    (the probability that the pin is a given in-batch positive)."""
    _, inverse, counts = np.unique(pins, return_inverse=True, return_counts=True)
    return np.log(counts[inverse] / max(len(pins), 1)).astype(np.float32)


def user_context(source: ExampleSource, events: np.ndarray) -> dict[str, Tensor]:
    """The per-user part of the context of Q events (Q,) as queries: demographics (Q, 4),
    the last N engagements strictly before each (Q, N), and the seconds from the newest
    event of its history state to it (Q,), -1 where the state is empty."""
    log = source.log
    user, ts, src = log.user[events], log.ts[events], source.src[events]
    rt_pins, rt_mask = source.recent.last_n(user, ts, source.cfg.realtime_len)
    since = np.where(src >= 0, ts - log.ts[np.maximum(src, 0)], -1)
    return {
        "demographics": torch.from_numpy(source.users.lookup(user)),
        "realtime_pin_ids": torch.from_numpy(rt_pins),
        "realtime_mask": torch.from_numpy(rt_mask),
        "since_last_s": torch.from_numpy(since.astype(np.int64)),
    }


def context_inputs(
    subject_ids: np.ndarray, subject_conf: np.ndarray, user_part: dict[str, Tensor]
) -> dict[str, Tensor]:
    """``OnlineTower`` context inputs: subject interests (Q, 3) + ``user_context``."""
    return {
        "subject_interest_ids": torch.from_numpy(np.ascontiguousarray(subject_ids)),
        "subject_interest_conf": torch.from_numpy(np.ascontiguousarray(subject_conf)),
        **user_part,
    }


@dataclasses.dataclass(frozen=True)
class Windows:
    """W windows of one epoch: events [start, end) and targets [tgt_lo, tgt_hi)."""

    start: np.ndarray  # (W,) int64
    end: np.ndarray
    tgt_lo: np.ndarray
    tgt_hi: np.ndarray


def epoch_windows(source: ExampleSource, rng: np.random.Generator) -> Windows:
    """Cut each user's events into windows of <= L events. A user with <= L events is one
    window (every target then sees its whole history, as at serving); longer users are
    cut at a random offset, drawn again every epoch."""
    n, length = len(source.log), source.cfg.max_len
    first = source.starts == np.arange(n)
    user_index = np.cumsum(first) - 1
    sizes = np.diff(np.append(np.flatnonzero(first), n))
    shift = np.where(sizes > length, rng.integers(0, length, size=len(sizes)), 0)
    chunk = (np.arange(n) - source.starts + shift[user_index]) // length
    new = first.copy()
    new[1:] |= chunk[1:] != chunk[:-1]
    window_of = np.cumsum(new) - 1
    start = np.flatnonzero(new)
    end = np.append(start[1:], n)
    # A target belongs to the window of its last history event; with no history, to the
    # user's first window (it then reads the empty state).
    anchor = np.where(source.src >= 0, source.src, source.starts)
    target_window = window_of[anchor]  # non-decreasing in the event index
    ids = np.arange(len(start))
    lo = np.searchsorted(target_window, ids, side="left")
    hi = np.searchsorted(target_window, ids, side="right")
    return Windows(start, end, lo, hi)


def epoch_batches(
    windows: Windows, rng: np.random.Generator, batch_targets: int, pool_batches: int = 50
) -> list[np.ndarray]:
    """Shuffled window ids grouped so each batch holds about ``batch_targets`` targets.

    Bucketing: windows are shuffled, then sorted by length within pools of
    ``pool_batches`` batches, so a batch pads little; the batch order is shuffled again."""
    counts = windows.tgt_hi - windows.tgt_lo
    order = rng.permutation(np.flatnonzero(counts > 0))
    pool = np.cumsum(counts[order]) // (batch_targets * pool_batches)
    order = order[np.lexsort(((windows.end - windows.start)[order], pool))]
    before = np.cumsum(counts[order]) - counts[order]
    cuts = np.flatnonzero(np.diff(before // batch_targets)) + 1
    batches = [part for part in np.split(order, cuts) if len(part)]
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclasses.dataclass(frozen=True)
class TrainBatch:
    """T targets over B windows."""

    encoder: dict[str, Tensor]  # SequenceEncoder inputs, (B, W, ...)
    rows: Tensor  # (T,) window of each target
    positions: Tensor  # (T,) position of its last history event, -1 = none
    context: dict[str, Tensor]  # OnlineTower context inputs, (T, ...)
    item: dict[str, Tensor]  # ItemTower inputs of the positives, (T, ...)
    pins: Tensor  # (T,) int64 positive pin ids (for accidental-hit masking)
    log_q: Tensor  # (T,) float32 log sampling probability of each positive
    # Candidates beyond the batch's positives (``Negatives``): S uniform catalogue pins
    # ("mixed") or none; the loss then corrects every column by ``log_expected`` (T + S,).
    extra_item: dict[str, Tensor] | None = None
    extra_pins: Tensor | None = None
    log_expected: Tensor | None = None
    columns: Tensor | None = None  # (T,) catalogue column of each positive ("catalogue")
    # (row, column) pairs of the catalogue logits to leave out of the softmax: the pins of
    # each target's earlier events (``Negatives.mask_seen``), the positive's column kept.
    seen: tuple[Tensor, Tensor] | None = None


@dataclasses.dataclass(frozen=True)
class Negatives:
    """Where a batch's negatives come from (``TrainConfig.negatives``)."""

    mode: str  # "in_batch" | "mixed" | "catalogue"
    uniform: int  # S uniform catalogue negatives per batch ("mixed")
    popularity: np.ndarray  # (M,) float64 share of training targets on each catalogue pin
    columns: np.ndarray  # (n,) int64 catalogue column of each event's pin
    mask_seen: bool = False

    @classmethod
    def for_source(
        cls, source: ExampleSource, mode: str, uniform: int, mask_seen: bool = False
    ) -> Negatives:
        cols, _ = source.catalog.index_of(source.log.pin)
        counts = np.bincount(cols, minlength=len(source.catalog)).astype(np.float64)
        return cls(mode, uniform, counts / max(counts.sum(), 1.0), cols, mask_seen)


def catalogue_inputs(catalog: PinTable, cols: np.ndarray | None = None) -> dict[str, Tensor]:
    """``ItemTower`` inputs of the catalogue rows ``cols`` (default: every row)."""
    sel = slice(None) if cols is None else cols
    return {
        "pin_ids": torch.from_numpy(np.ascontiguousarray(catalog.pin_id[sel])),
        "interest_ids": torch.from_numpy(np.ascontiguousarray(catalog.interest_ids[sel])),
        "interest_conf": torch.from_numpy(np.ascontiguousarray(catalog.interest_conf[sel])),
    }


def _extra_candidates(
    source: ExampleSource, tgt: np.ndarray, negatives: Negatives, rng: np.random.Generator
) -> dict[str, object]:
    """The ``TrainBatch`` fields of ``negatives`` for targets ``tgt`` (T,)."""
    if negatives.mode not in ("catalogue", "mixed"):
        return {}
    cols = negatives.columns[tgt]
    if negatives.mode == "catalogue":
        seen = seen_pairs(source.starts, negatives.columns, tgt) if negatives.mask_seen else None
        return {"columns": torch.from_numpy(cols), "seen": seen}
    m, t, s = len(source.catalog), len(tgt), negatives.uniform
    neg = rng.integers(0, m, size=s)
    expected = t * negatives.popularity[np.concatenate([cols, neg])] + s / m
    return {
        "extra_item": catalogue_inputs(source.catalog, neg),
        "extra_pins": torch.from_numpy(source.catalog.pin_id[neg]),
        "log_expected": torch.from_numpy(np.log(expected).astype(np.float32)),
    }


def ragged(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``sizes`` (R,) items each, laid end to end -> (row, offset within the row)
    of every item, both (sum(sizes),) int64."""
    rows = np.repeat(np.arange(len(sizes)), sizes)
    return rows, np.arange(len(rows)) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def seen_pairs(starts: np.ndarray, columns: np.ndarray, tgt: np.ndarray) -> tuple[Tensor, Tensor]:
    """(rows, cols) of the catalogue columns of the events before each target ``tgt``
    (T,) in its user's log (``starts`` (n,), ``columns`` (n,)), the target's own column
    left out: what evaluation and serving's seen-filter never rank."""
    rows, events = ragged(tgt - starts[tgt])
    cols = columns[starts[tgt][rows] + events]
    keep = cols != columns[tgt][rows]
    return torch.from_numpy(rows[keep]), torch.from_numpy(cols[keep])


def pseudo_context(
    source: ExampleSource, tgt: np.ndarray, mode: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Subject-pin interests (T, 3) standing in for the request context of targets ``tgt``:
    "positive" = the positive pin's own interests; "previous" = those of the example's
    subject pin, by the rule evaluation uses (``ModelConfig.subject_pin``: the newest
    engagement before t, or the previous conversion); "mixed" = either, half and half.

    "previous" is the default: "positive" tells the model the answer's interests, so it
    learns to bet everything on them, and a real subject pin (related to the target, not
    equal to it) then hurts: on the 10k-user world, with-context Recall@10 fell well below
    no-context with "positive" and "mixed", and rose above it with "previous"."""
    if mode not in PSEUDO_CONTEXTS:
        raise ValueError(f"pseudo-context must be one of {PSEUDO_CONTEXTS}, got {mode!r}")
    seq = source.seq
    positive = seq.interest_ids[tgt], seq.interest_conf[tgt]
    if mode == "positive":
        return positive
    previous = source.subject_ids[tgt], source.subject_conf[tgt]
    if mode == "previous":
        return previous
    pick = (rng.random(len(tgt)) < 0.5)[:, None]
    return np.where(pick, positive[0], previous[0]), np.where(pick, positive[1], previous[1])


def make_batch(
    source: ExampleSource,
    windows: Windows,
    ids: np.ndarray,
    log_q: np.ndarray,
    pseudo: str = "previous",
    seed: int = 0,
    negatives: Negatives | None = None,
) -> TrainBatch:
    """The batch of windows ``ids`` (B,); ``pseudo`` picks the pseudo-context
    (``pseudo_context``), ``negatives`` the extra candidates, ``seed`` their random
    choices."""
    start, end = windows.start[ids], windows.end[ids]
    rows, offsets = ragged(windows.tgt_hi[ids] - windows.tgt_lo[ids])
    tgt = windows.tgt_lo[ids][rows] + offsets
    src = source.src[tgt]
    positions = np.where(src >= 0, src - start[rows], -1)
    enc = build_encoder_inputs(source.seq, start, end, source.cfg.max_len)
    log, seq = source.log, source.seq
    ids3, conf3 = seq.interest_ids[tgt], seq.interest_conf[tgt]
    rng = np.random.default_rng(seed)
    subject = pseudo_context(source, tgt, pseudo, rng)
    extra = _extra_candidates(source, tgt, negatives, rng) if negatives is not None else {}
    return TrainBatch(
        encoder=enc.tensors(),
        rows=torch.from_numpy(rows),
        positions=torch.from_numpy(positions),
        context=context_inputs(*subject, user_context(source, tgt)),
        item={
            "pin_ids": torch.from_numpy(log.pin[tgt]),
            "interest_ids": torch.from_numpy(ids3),
            "interest_conf": torch.from_numpy(conf3),
        },
        pins=torch.from_numpy(log.pin[tgt]),
        log_q=torch.from_numpy(log_q[tgt]),
        **extra,
    )
