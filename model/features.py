"""Model inputs from sorted event arrays, vectorised (no Python loop per event).

The batch encode job calls ``sequence_events`` once per shard and ``build_encoder_inputs``
per batch of users; training and evaluation use the same two functions, so the cached
hidden state is computed from exactly the features the encoder was trained on.

Time rules (nothing at or after a target's time is a feature of it):
- history of event k = the user's events before it in the log's (time, arrival) order,
  or strictly earlier in time / before its day (``history_index``);
- the real-time sequence of a query at t = the user's last N engagements strictly
  before t (``realtime_sequence``), the same thing the stream job keeps in Feast.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from model.tables import EventLog, PinTable

_KEY_SHIFT = 32  # composite (user rank, seconds) key: 2^32 s is 136 years of events


def history_index(log: EventLog, resolution_s: int = 1) -> np.ndarray:
    """(n,) int64: for each event, the index of the same user's last event strictly
    earlier in time, or -1. With causal attention the encoder's hidden state at that
    index summarises exactly the history of the event.

    ``resolution_s`` coarsens "earlier": with 86400 the history ends before the event's
    UTC day, i.e. it is what a daily batch job had encoded when the event happened.
    With 0, "earlier" is the log's own order (time, then arrival): events stamped in the
    same second count in the order they arrived, as the leave-one-out split orders them."""
    n = len(log)
    if resolution_s == 0:
        prev = np.arange(n, dtype=np.int64) - 1
        return np.where(prev >= log.user_starts(), prev, -1).astype(np.int64)
    bucket = log.ts // resolution_s
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (log.user[1:] != log.user[:-1]) | (bucket[1:] != bucket[:-1])
    run_first = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
    prev = run_first - 1
    return np.where(prev >= log.user_starts(), prev, -1).astype(np.int64)


def log_gaps(log: EventLog) -> np.ndarray:
    """(n,) float32 log1p(hours since the user's previous event), 0 for the first one.

    A gap between consecutive events, not to "now": the encoder's state then does not
    depend on when the daily job ran, and training windows match serving windows."""
    gap = np.zeros(len(log), dtype=np.float64)
    if len(log) > 1:
        same = log.user[1:] == log.user[:-1]
        gap[1:] = np.where(same, log.ts[1:] - log.ts[:-1], 0)
    return np.log1p(gap / 3600.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SequenceEvents:
    """Per-event encoder features of a sorted ``EventLog`` (n events)."""

    pin: np.ndarray  # (n,) int64 raw pin id
    action: np.ndarray  # (n,) int64 action code
    log_gap: np.ndarray  # (n,) float32
    interest_ids: np.ndarray  # (n, 3) int64 raw ids
    interest_conf: np.ndarray  # (n, 3) float32


def sequence_events(log: EventLog, pins: PinTable) -> SequenceEvents:
    """Join each event of the sorted ``log`` with its pin's interests."""
    ids, conf = pins.lookup(log.pin)
    return SequenceEvents(log.pin, log.action, log_gaps(log), ids, conf)


@dataclasses.dataclass(frozen=True)
class EncoderInputs:
    """A right-padded batch for ``SequenceEncoder`` (B rows, W <= L positions, oldest
    first). Positions >= lengths are padding; causal attention keeps them out."""

    pin_ids: np.ndarray  # (B, W) int64
    interest_ids: np.ndarray  # (B, W, 3) int64
    interest_conf: np.ndarray  # (B, W, 3) float32
    actions: np.ndarray  # (B, W) int64
    log_gaps: np.ndarray  # (B, W) float32
    lengths: np.ndarray  # (B,) int64

    def tensors(self) -> dict[str, torch.Tensor]:
        """The keyword arguments of ``SequenceEncoder.forward`` (shares memory)."""
        return {f.name: torch.from_numpy(getattr(self, f.name)) for f in dataclasses.fields(self)}


def build_encoder_inputs(
    events: SequenceEvents,
    starts: np.ndarray,
    ends: np.ndarray,
    max_len: int,
    width: int | None = None,
) -> EncoderInputs:
    """Rows = event ranges ``[starts[b], ends[b])`` (B,) of ``events``; each row keeps its
    last ``max_len`` events. ``width`` pads every row to a fixed W (default: the longest
    row), e.g. for a job that wants constant [B, L] arrays."""
    starts = np.maximum(np.asarray(starts, np.int64), np.asarray(ends, np.int64) - max_len)
    lengths = np.maximum(np.asarray(ends, np.int64) - starts, 0)
    w = width or max(int(lengths.max(initial=0)), 1)
    offsets = np.arange(w)
    valid = offsets[None, :] < lengths[:, None]
    idx = np.where(valid, starts[:, None] + offsets[None, :], 0)
    if len(events.pin) == 0:
        idx = np.zeros_like(idx)
        events = _one_blank_event()

    def take(values: np.ndarray) -> np.ndarray:
        out = values[idx]
        out[~valid] = 0
        return out

    return EncoderInputs(
        pin_ids=take(events.pin),
        interest_ids=take(events.interest_ids),
        interest_conf=take(events.interest_conf),
        actions=take(events.action),
        log_gaps=take(events.log_gap),
        lengths=lengths,
    )


def _one_blank_event() -> SequenceEvents:
    """One all-zero event, so an empty log still yields (fully padded) arrays."""
    return SequenceEvents(
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        np.zeros(1, np.float32),
        np.zeros((1, 3), np.int64),
        np.zeros((1, 3), np.float32),
    )


@dataclasses.dataclass(frozen=True)
class RecentEngagements:
    """Engagements indexed once by a composite (user rank, seconds) key, so the last N
    before many query times are found with one ``searchsorted`` per batch."""

    users: np.ndarray  # (V,) int64 distinct engaged users, sorted
    key: np.ndarray  # (E,) int64 composite key, sorted
    pin: np.ndarray  # (E,) int64
    base: int  # seconds subtracted from every time

    @classmethod
    def from_log(cls, engagements: EventLog) -> RecentEngagements:
        if len(engagements) == 0:
            empty = np.zeros(0, np.int64)
            return cls(empty, empty, empty, 0)
        users = np.unique(engagements.user)
        base = int(engagements.ts.min())
        key = _composite_key(np.searchsorted(users, engagements.user), engagements.ts - base)
        return cls(users, key, engagements.pin, base)

    def last_n(
        self, query_user: np.ndarray, query_ts: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Last ``n`` engaged pins of each query's user strictly before its time.

        ``query_user``, ``query_ts`` (Q,) int64 (seconds) -> pins (Q, n) int64 and mask
        (Q, n) bool, oldest first and right-aligned; 0 / False where the user has fewer."""
        query_user = np.asarray(query_user, np.int64)
        q = len(query_user)
        if len(self.key) == 0 or q == 0:
            return np.zeros((q, n), np.int64), np.zeros((q, n), bool)
        rank = np.searchsorted(self.users, query_user)
        present = self.users[np.minimum(rank, len(self.users) - 1)] == query_user
        rel = np.clip(np.asarray(query_ts, np.int64) - self.base, 0, (1 << _KEY_SHIFT) - 1)
        end = np.searchsorted(self.key, _composite_key(rank, rel), side="left")
        first = np.searchsorted(self.key, _composite_key(rank, np.zeros(q, np.int64)), side="left")
        idx = end[:, None] - n + np.arange(n)[None, :]
        mask = (idx >= first[:, None]) & present[:, None]
        pins = np.where(mask, self.pin[np.clip(idx, 0, len(self.pin) - 1)], 0)
        return pins.astype(np.int64), mask


def realtime_sequence(
    engagements: EventLog, query_user: np.ndarray, query_ts: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """One-off ``RecentEngagements.from_log(engagements).last_n(...)``."""
    return RecentEngagements.from_log(engagements).last_n(query_user, query_ts, n)


def _composite_key(rank: np.ndarray, rel_seconds: np.ndarray) -> np.ndarray:
    """(user rank, seconds) -> one int64 that sorts like the pair."""
    if len(rel_seconds) and int(np.max(rel_seconds)) >= (1 << _KEY_SHIFT):
        raise ValueError("event times span more than 2^32 seconds")
    return (np.asarray(rank, np.int64) << _KEY_SHIFT) | np.asarray(rel_seconds, np.int64)
