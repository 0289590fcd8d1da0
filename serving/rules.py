"""Business rules applied inside retrieval: seen pins, interest filter, diversity.

Pure numpy over one request's ANN candidates (best first). The caller over-fetches and asks
again with a larger k when fewer than k qualify, so k candidates come back whenever the
index holds k that qualify.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from towerline.core.ann.interests import PinInterests
from towerline.core.errors import InputError


@dataclasses.dataclass(frozen=True)
class Rules:
    """What one request allows: ``interests`` keeps pins carrying one of them;
    ``max_per_interest`` caps pins sharing a first interest; ``seen`` pins are dropped."""

    seen: np.ndarray  # (s,) int64
    interests: tuple[int, ...] | None = None
    max_per_interest: int | None = None

    @property
    def needs_interests(self) -> bool:
        return self.interests is not None or self.max_per_interest is not None


def apply_rules(
    ids: np.ndarray, scores: np.ndarray, rules: Rules, pins: PinInterests | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates ``ids`` (c,) and ``scores`` (c,), best first -> the first ``k`` that pass."""
    keep = ids >= 0  # hnswlib pads a short answer with -1 labels
    if len(rules.seen):
        # a real-time sequence is short: comparing all pairs beats np.isin's sort
        keep &= ~(ids[:, None] == rules.seen[None, :]).any(axis=1)
    if rules.needs_interests:
        if pins is None:
            raise InputError(
                "interests / max_per_interest need pin interests beside the index, and this "
                "index was built without them; rebuild it with `towerline batch index`"
            )
        interest_ids = pins.lookup(ids)
        if rules.interests is not None:
            keep &= np.isin(interest_ids, np.asarray(rules.interests, np.int64)).any(axis=1)
        if rules.max_per_interest is not None:
            keep &= _under_cap(interest_ids[:, 0], keep, rules.max_per_interest)
    chosen = np.flatnonzero(keep)[:k]
    return ids[chosen], scores[chosen]


def _under_cap(first: np.ndarray, keep: np.ndarray, cap: int) -> np.ndarray:
    """True where a kept candidate is among the first ``cap`` kept ones of its interest."""
    out = np.zeros(len(first), bool)
    counts: dict[int, int] = {}
    for i in np.flatnonzero(keep):
        seen = counts.get(int(first[i]), 0)
        if seen < cap:
            counts[int(first[i])] = seen + 1
            out[i] = True
    return out
