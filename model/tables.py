"""In-memory tables the model reads: events, pin profiles, user profiles (pure numpy).

Raw interest ids keep their lake values; two sentinels fill the fixed 3 slots:
``PAD_INTEREST`` (-1, no interest) and ``UNKNOWN_INTEREST`` (-2, a pin missing from the
pins table). The towers map raw ids to embedding rows themselves, so serving can feed
Feast's ``interest_ids`` as they are.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np

from towerline.core.contracts import (
    AGE_BUCKETS,
    GENDERS,
    INTEREST_SLOTS,
    PAD_INTEREST,
    UNKNOWN_INTEREST,
)


@dataclasses.dataclass(frozen=True)
class EventLog:
    """n events sorted by (user, ts), ties in input order. ``ts`` is whole seconds since
    the epoch: events in the same second count as simultaneous (never as history of
    each other), which keeps "strictly before the target" conservative."""

    user: np.ndarray  # (n,) int64
    pin: np.ndarray  # (n,) int64
    action: np.ndarray  # (n,) int64 code, 0 = unknown
    ts: np.ndarray  # (n,) int64 seconds

    @classmethod
    def from_arrays(
        cls, user: np.ndarray, pin: np.ndarray, action: np.ndarray, ts: np.ndarray
    ) -> EventLog:
        """Sort (stable) by user then time; inputs in any order."""
        order = np.lexsort((ts, user))
        arrays = (user, pin, action, ts)
        return cls(*(np.ascontiguousarray(np.asarray(a)[order], dtype=np.int64) for a in arrays))

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> EventLog:
        """The events at sorted ``index`` (a subset keeps the sort order)."""
        return EventLog(self.user[index], self.pin[index], self.action[index], self.ts[index])

    def user_starts(self) -> np.ndarray:
        """(n,) int64 index of the first event of each event's user."""
        first = np.ones(len(self.user), dtype=bool)
        first[1:] = self.user[1:] != self.user[:-1]
        return np.maximum.accumulate(np.where(first, np.arange(len(self.user)), 0))

    def user_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per distinct user (U,): user id, first index, end index (exclusive)."""
        if len(self.user) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        users, starts = np.unique(self.user, return_index=True)
        ends = np.append(starts[1:], len(self.user))
        return users, starts.astype(np.int64), ends.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class PinTable:
    """M pins sorted by id with their interests in 3 fixed slots."""

    pin_id: np.ndarray  # (M,) int64, sorted, unique
    interest_ids: np.ndarray  # (M, 3) int64, PAD_INTEREST after the last interest
    interest_conf: np.ndarray  # (M, 3) float32, 0 after the last interest

    def __len__(self) -> int:
        return len(self.pin_id)

    def index_of(self, pins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each of ``pins`` (n,) and whether it is in the table (n,) bool."""
        row = np.searchsorted(self.pin_id, pins)
        row = np.minimum(row, max(len(self.pin_id) - 1, 0))
        found = (self.pin_id[row] == pins) if len(self.pin_id) else np.zeros(len(pins), bool)
        return row, found

    def lookup(self, pins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interests of ``pins`` (any shape S) -> (S + (3,)) int64 ids, float32 conf.

        A pin not in the table gets the unknown bucket with confidence 1."""
        flat = np.asarray(pins, dtype=np.int64).reshape(-1)
        row, found = self.index_of(flat)
        ids = np.full((len(flat), INTEREST_SLOTS), PAD_INTEREST, dtype=np.int64)
        conf = np.zeros((len(flat), INTEREST_SLOTS), dtype=np.float32)
        if len(self.pin_id):
            ids[found], conf[found] = self.interest_ids[row[found]], self.interest_conf[row[found]]
        ids[~found, 0], conf[~found, 0] = UNKNOWN_INTEREST, 1.0
        shape = np.shape(pins) + (INTEREST_SLOTS,)
        return ids.reshape(shape), conf.reshape(shape)

    def with_pins(self, pins: np.ndarray) -> PinTable:
        """This table plus any of ``pins`` it lacks (unknown interests): the catalogue."""
        extra = np.setdiff1d(np.asarray(pins, dtype=np.int64), self.pin_id)
        if len(extra) == 0:
            return self
        ids, conf = PinTable.empty().lookup(extra)
        pin_id = np.concatenate([self.pin_id, extra])
        order = np.argsort(pin_id, kind="stable")
        both_ids = np.concatenate([self.interest_ids, ids])[order]
        return PinTable(pin_id[order], both_ids, np.concatenate([self.interest_conf, conf])[order])

    @property
    def max_interest_id(self) -> int:
        return int(self.interest_ids.max(initial=0))

    @classmethod
    def empty(cls) -> PinTable:
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, INTEREST_SLOTS), np.int64),
            np.zeros((0, INTEREST_SLOTS), np.float32),
        )


def stable_bucket(values: Sequence[str] | np.ndarray, buckets: int) -> np.ndarray:
    """Strings -> (n,) int64 in [1, buckets): crc32, stable across processes (unlike
    ``hash``). Row 0 stays for "no profile". Hashes each distinct value once."""
    uniq, inverse = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    codes = np.array([1 + zlib.crc32(v.encode()) % (buckets - 1) for v in uniq], dtype=np.int64)
    return codes[inverse].reshape(-1)


def symbol_codes(values: Sequence[str] | np.ndarray, symbols: Sequence[str]) -> np.ndarray:
    """Strings -> (n,) int64 index into ``symbols``; unknown strings -> 0."""
    lookup = {s: i for i, s in enumerate(symbols)}
    uniq, inverse = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    codes = np.array([lookup.get(v, 0) for v in uniq], dtype=np.int64)
    return codes[inverse].reshape(-1)


def encode_demographics(
    age_bucket: Sequence[str],
    gender: Sequence[str],
    country: Sequence[str],
    segment: Sequence[str],
    country_buckets: int,
    segment_buckets: int,
) -> np.ndarray:
    """user_profile strings -> (n, 4) int64 codes [age, gender, country, segment], the
    ``demographics`` input of ``ContextLayer`` (serving calls this on Feast's values)."""
    return np.stack(
        [
            symbol_codes(age_bucket, AGE_BUCKETS),
            symbol_codes(gender, GENDERS),
            stable_bucket(country, country_buckets),
            stable_bucket(segment, segment_buckets),
        ],
        axis=1,
    ).reshape(-1, 4)


@dataclasses.dataclass(frozen=True)
class UserTable:
    """U users sorted by id with encoded demographics."""

    user_id: np.ndarray  # (U,) int64 sorted
    demographics: np.ndarray  # (U, 4) int64

    def lookup(self, users: np.ndarray) -> np.ndarray:
        """(n,) user ids -> (n, 4) codes; users without a profile get all zeros."""
        users = np.asarray(users, dtype=np.int64)
        out = np.zeros((len(users), 4), dtype=np.int64)
        if len(self.user_id) == 0:
            return out
        row = np.minimum(np.searchsorted(self.user_id, users), len(self.user_id) - 1)
        found = self.user_id[row] == users
        out[found] = self.demographics[row[found]]
        return out
