"""The pin catalogue and its per-day sampling pools (pure numpy).

Each pin has 1-3 interests (slot 0 = primary, highest confidence), a Zipf popularity
within its primary interest, a 64-bit image signature (shared by near-duplicates) and,
for a few trending pins, a popularity bump around a peak day.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from towerline.world.config import WorldConfig
from towerline.world.sample import gumbel_top, softmax, splitmix64

PIN_SLOTS = 3  # towerline.core.contracts.MAX_INTERESTS_PER_PIN


@dataclasses.dataclass(frozen=True)
class Catalog:
    """All pins; index i is pin_id i + 1. Shapes: P pins, K interests, T trending."""

    interest_prior: np.ndarray  # (K,) float64 global interest probabilities
    interest_ids: np.ndarray  # (P, 3) int32, -1 after the pin's last interest
    confidences: np.ndarray  # (P, 3) float32, descending, 0 after the last interest
    popularity: np.ndarray  # (P,) float64 base weight = rank ** -zipf within primary
    rank: np.ndarray  # (P,) int32 1-based popularity rank within the primary interest
    signature: np.ndarray  # (P,) uint64
    original: np.ndarray  # (P,) int64 index of the pin this one duplicates, else -1
    trending: np.ndarray  # (T,) int64 pin indices
    peak_day: np.ndarray  # (T,) int64 day index (0 = first covered day)

    @property
    def num_interests(self) -> np.ndarray:
        """(P,) int64 number of interests of each pin (1-3)."""
        return (self.interest_ids >= 0).sum(axis=1)


def sample_catalog(rng: np.random.Generator, cfg: WorldConfig) -> Catalog:
    """Draw the pins of ``cfg`` (P = cfg.pins, K = cfg.interests)."""
    prior = softmax(rng.normal(0.0, cfg.interest_spread, cfg.interests))
    # A random K of the pins get primary interest 0..K-1 and are never duplicates, so no
    # interest is ever empty.
    cover = rng.permutation(cfg.pins)[: cfg.interests]
    ids, conf = _pin_interests(rng, cfg, prior, cover)
    original = _duplicates(rng, cfg, cover)
    dup = original >= 0
    ids[dup], conf[dup] = ids[original[dup]], conf[original[dup]]
    signature = splitmix64(np.arange(cfg.pins, dtype=np.uint64) + np.uint64(cfg.seed))
    signature[dup] = signature[original[dup]]
    rank = _ranks_within(rng, ids[:, 0], cfg.interests)
    popularity = rank.astype(np.float64) ** -cfg.zipf_exponent
    trending, peak = _trending(rng, cfg, dup)
    return Catalog(prior, ids, conf, popularity, rank, signature, original, trending, peak)


def _pin_interests(
    rng: np.random.Generator, cfg: WorldConfig, prior: np.ndarray, cover: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) int32 interest ids (-1 padded) and (P, 3) float32 descending confidences.

    Interests are drawn without replacement ∝ ``prior``; pin ``cover[k]`` (K,) gets k first.
    """
    slots = min(PIN_SLOTS, cfg.interests)
    logits = np.broadcast_to(np.log(prior), (cfg.pins, cfg.interests)).copy()
    logits[cover, np.arange(cfg.interests)] = 1e9
    chosen = gumbel_top(rng, logits, slots).astype(np.int32)
    count = 1 + rng.binomial(slots - 1, 0.4, cfg.pins)
    ids = np.full((cfg.pins, PIN_SLOTS), -1, dtype=np.int32)
    ids[:, :slots] = chosen
    # Confidences: primary in [0.55, 1], each next a 25-85% fraction of the previous.
    ratios = np.column_stack(
        [rng.uniform(0.55, 1.0, cfg.pins), rng.uniform(0.25, 0.85, (cfg.pins, PIN_SLOTS - 1))]
    )
    conf = np.cumprod(ratios, axis=1).astype(np.float32)
    absent = np.arange(PIN_SLOTS) >= count[:, None]
    ids[absent], conf[absent] = -1, 0.0
    return ids, conf


def _duplicates(rng: np.random.Generator, cfg: WorldConfig, cover: np.ndarray) -> np.ndarray:
    """(P,) int64: the original of each near-duplicate pin, -1 for originals.

    Duplicates are drawn outside ``cover`` (K,) and copy an original drawn with
    replacement from the non-duplicates (so several duplicates may share one original,
    and no duplicate is the original of another).
    """
    n_dup = min(int(round(cfg.duplicate_rate * cfg.pins)), cfg.pins - cfg.interests)
    free = np.setdiff1d(np.arange(cfg.pins), cover)
    dups = rng.permutation(free)[:n_dup]
    originals = np.setdiff1d(np.arange(cfg.pins), dups)
    original = np.full(cfg.pins, -1, dtype=np.int64)
    if n_dup:
        original[dups] = originals[rng.integers(0, len(originals), n_dup)]
    return original


def _ranks_within(rng: np.random.Generator, group: np.ndarray, groups: int) -> np.ndarray:
    """(P,) int32 1-based random rank of each pin within its group (primary interest)."""
    order = np.lexsort((rng.random(len(group)), group))
    starts = np.searchsorted(group[order], np.arange(groups))
    rank = np.empty(len(group), dtype=np.int32)
    rank[order] = np.arange(len(group)) - starts[group[order]]
    return rank + 1


def _trending(
    rng: np.random.Generator, cfg: WorldConfig, dup: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(T,) int64 trending pin indices (sorted, never duplicates) and their peak day."""
    candidates = np.flatnonzero(~dup)
    n = min(int(round(cfg.trending_rate * cfg.pins)), len(candidates))
    pins = np.sort(rng.choice(candidates, size=n, replace=False))
    # Peaks inside the window when there is room, so the bump both rises and falls.
    lo, hi = (1, cfg.days - 1) if cfg.days >= 3 else (0, cfg.days)
    return pins.astype(np.int64), rng.integers(lo, hi, n).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Pools:
    """Per-interest sampling pools as one sorted CDF per day.

    M pool entries = (interest, pin) pairs of every pin slot, grouped by interest; entry
    weight = popularity x confidence² (+ the day's trending bump). ``cdf[d]`` (M,) maps
    interest k to the interval (k, k + 1], so ``searchsorted(cdf[d], k + u)`` draws a pin
    of interest k in one vectorised call.
    """

    pin: np.ndarray  # (M,) int64 pin index of each entry
    seg_end: np.ndarray  # (K,) int64 one past the last entry of each interest
    cdf: list[np.ndarray]  # D x (M,) float64

    def draw(self, day: int, interest: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Pin indices (N,) for interests (N,) on ``day``, given uniforms ``u`` (N,)."""
        idx = np.searchsorted(self.cdf[day], interest + u, side="right")
        # k + u can round up to k + 1 in float64; keep the draw inside its interest.
        return self.pin[np.minimum(idx, self.seg_end[interest] - 1)]

    @property
    def interest(self) -> np.ndarray:
        """(M,) int64 interest of each entry."""
        return np.repeat(np.arange(len(self.seg_end)), np.diff(self.seg_end, prepend=0))

    def probabilities(self, day: int) -> np.ndarray:
        """(M,) float64 probability that ``draw`` picks each entry for its interest on
        ``day``: the steps of that day's CDF, exactly what the draw sees."""
        cdf = self.cdf[day]
        below = np.concatenate(([0.0], cdf[:-1]))
        # Every interest has entries (validate), so each segment starts at k + 0.
        below[self.seg_end[:-1]] = np.arange(1, len(self.seg_end), dtype=np.float64)
        return cdf - below


def build_pools(catalog: Catalog, cfg: WorldConfig) -> Pools:
    """The per-day pools of ``catalog`` over ``cfg.days`` days."""
    slot_ok = catalog.interest_ids >= 0
    interest = catalog.interest_ids[slot_ok].astype(np.int64)
    order = np.argsort(interest, kind="stable")
    interest = interest[order]
    pin = np.nonzero(slot_ok)[0][order]
    # Squared confidence: a pin also shows up for its secondary interests, but clearly
    # less, so the shown pin's primary interest reveals the latent interest more often.
    relevance = catalog.confidences[slot_ok][order].astype(np.float64) ** 2
    base = catalog.popularity[pin] * relevance
    seg_end = np.searchsorted(interest, np.arange(cfg.interests), side="right")
    seg_base = np.bincount(interest, weights=base, minlength=cfg.interests)
    # Trending entries: a Gaussian bump whose peak adds peak_share of the interest's mass.
    where = np.flatnonzero(np.isin(pin, catalog.trending))
    peak = catalog.peak_day[np.searchsorted(catalog.trending, pin[where])]
    amp = cfg.trending_peak_share * seg_base[interest[where]] * relevance[where]
    cdf = []
    for day in range(cfg.days):
        weight = base.copy()
        bump = np.exp(-0.5 * ((day - peak) / cfg.trending_width_days) ** 2)
        weight[where] += amp * bump
        cdf.append(_segment_cdf(weight, interest, seg_end))
    return Pools(pin.astype(np.int64), seg_end.astype(np.int64), cdf)


def _segment_cdf(weight: np.ndarray, interest: np.ndarray, seg_end: np.ndarray) -> np.ndarray:
    """(M,) float64: k + cumulative share of each entry within its interest k."""
    total = np.cumsum(weight)
    before = np.concatenate(([0.0], total[seg_end[:-1] - 1]))
    seg_total = total[seg_end - 1] - before
    cdf = interest + (total - before[interest]) / seg_total[interest]
    cdf[seg_end - 1] = np.arange(len(seg_end)) + 1.0  # exact right edge per interest
    return cdf
