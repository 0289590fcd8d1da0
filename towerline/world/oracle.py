"""The planted oracle: how likely the generator was to show each pin for a conversion.

For a held-out offsite conversion the oracle knows its planted intent (``interest`` in
``truth/conversions.parquet``: the session's intent, or the sticky chain's) and scores
every catalogue pin by the generator's own probability of showing it that day::

    P(pin) = (1 - noise_rate) * P(pin | intent, day) + noise_rate * sum_k prior_k P(pin | k, day)

where ``P(pin | k, day)`` is the pin's share of interest k's pool on that day (popularity x
confidence², plus the trending bump): exactly the steps of the CDF the generator drew
from. Nothing that does not know the noise draw can expect to rank a target higher, so
its Recall@K under full ranking is the ceiling of any model. ``mode="shown"`` scores by
the interest the pin was really drawn from (noise included): a looser bound that also
knows the noise.

    oracle = load_oracle(world_dir)
    rows = oracle.find(user_ids, ts_s)                      # (Q,) truth rows
    scores = oracle.scores(user_ids, ts_s, catalog_pin_ids)  # (Q, M) float64
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from towerline.core.errors import InputError
from towerline.world.config import WorldConfig
from towerline.world.pins import PIN_SLOTS, Catalog, Pools, build_pools
from towerline.world.sample import DAY_MS

MODES = ("intent", "shown")
UNITS = {"s": 1000, "ms": 1}


@dataclasses.dataclass(frozen=True)
class ConversionTruth:
    """C planted conversions sorted by (user, time); see worlddoc's ``conversion_truth``."""

    user_id: np.ndarray  # (C,) int64
    ts_ms: np.ndarray  # (C,) int64 ms since the epoch
    day: np.ndarray  # (C,) int64 day index (0 = first covered day)
    interest: np.ndarray  # (C,) int64 planted intent
    shown: np.ndarray  # (C,) int64 interest the pin was drawn from
    session: np.ndarray  # (C,) bool follows a planted session
    explore: np.ndarray  # (C,) bool the session's intent came from the global prior


def pin_scores(
    pools: Pools,
    prior: np.ndarray,
    noise_rate: float,
    day: np.ndarray,
    interest: np.ndarray,
    pin_ids: np.ndarray,
) -> np.ndarray:
    """(Q, M) float64 generator probability of each catalogue pin ``pin_ids`` (M,) for Q
    queries on day indices ``day`` (Q,) with planted interests ``interest`` (Q,).

    ``prior`` (K,) global interest probabilities; a pin id outside the world scores 0.
    Memory is Q x M x 8 bytes: pass queries in batches."""
    day, interest = np.asarray(day, np.int64), np.asarray(interest, np.int64)
    pin_ids = np.asarray(pin_ids, np.int64)
    num_pins = int(pools.pin.max()) + 1
    col_of_pin = np.full(num_pins, -1, dtype=np.int64)
    inside = (pin_ids >= 1) & (pin_ids <= num_pins)
    col_of_pin[pin_ids[inside] - 1] = np.flatnonzero(inside)
    entry_col = col_of_pin[pools.pin]  # (E,) catalogue column of each pool entry, -1: none
    present = entry_col >= 0
    entry_interest = pools.interest
    seg_start = np.concatenate(([0], pools.seg_end[:-1]))
    out = np.zeros((len(day), len(pin_ids)), dtype=np.float64)
    for d in np.unique(day):
        prob = pools.probabilities(int(d))
        noise = noise_rate * prior[entry_interest] * prob
        background = np.bincount(entry_col[present], weights=noise[present], minlength=len(pin_ids))
        on_day = np.flatnonzero(day == d)
        out[on_day] = background
        for k in np.unique(interest[on_day]):
            rows = on_day[interest[on_day] == k]
            seg = slice(seg_start[k], pools.seg_end[k])
            keep = present[seg]
            cols = entry_col[seg][keep]
            out[np.ix_(rows, cols)] += (1.0 - noise_rate) * prob[seg][keep]
    return out


@dataclasses.dataclass(frozen=True)
class Oracle:
    """A world's pools and conversion truth; scores held-out conversions (see module)."""

    pools: Pools
    prior: np.ndarray  # (K,)
    noise_rate: float
    truth: ConversionTruth

    def find(self, user_ids: np.ndarray, ts: np.ndarray, unit: str = "s") -> np.ndarray:
        """(Q,) int64 truth row of each conversion (user, time in ``unit`` "s" or "ms").

        Several conversions of a user in one second (or ms): the latest, as the
        leave-one-out protocol's last event. Raises ``InputError`` if one is no conversion."""
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {sorted(UNITS)}, got {unit!r}")
        user_ids, ts = np.asarray(user_ids, np.int64), np.asarray(ts, np.int64)
        truth_ts = self.truth.ts_ms // UNITS[unit]
        lo = int(truth_ts.min()) if len(truth_ts) else 0
        span = int(truth_ts.max()) - lo + 1 if len(truth_ts) else 1
        if (int(self.truth.user_id.max(initial=0)) + 1) * span >= 2**62:
            raise ValueError("user ids x time span overflow the lookup key; use unit='s'")
        # Sorted by (user, time), so user * span + time is sorted: one searchsorted.
        keys = self.truth.user_id * span + (truth_ts - lo)
        query = user_ids * span + np.clip(ts - lo, -1, span)
        rows = np.maximum(np.searchsorted(keys, query, side="right") - 1, 0)
        found = (self.truth.user_id[rows] == user_ids) & (truth_ts[rows] == ts)
        if not found.all():
            q = int(np.flatnonzero(~found)[0])
            raise InputError(
                f"oracle: {int((~found).sum())} of {len(query)} targets are no conversion of "
                f"this world (first: user_id {user_ids[q]} at {ts[q]} {unit})"
            )
        return rows

    def scores(
        self,
        user_ids: np.ndarray,
        ts: np.ndarray,
        pin_ids: np.ndarray,
        unit: str = "s",
        mode: str = "intent",
    ) -> np.ndarray:
        """(Q, M) float64 scores of catalogue pins ``pin_ids`` (M,) for the conversions
        of ``user_ids`` (Q,) at ``ts`` (Q,); higher = more likely (see module)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        rows = self.find(user_ids, ts, unit)
        t = self.truth
        if mode == "shown":
            return pin_scores(self.pools, self.prior, 0.0, t.day[rows], t.shown[rows], pin_ids)
        interest = t.interest[rows]
        return pin_scores(self.pools, self.prior, self.noise_rate, t.day[rows], interest, pin_ids)


def load_oracle(world_dir: Path) -> Oracle:
    """The oracle of the world generated into ``world_dir`` (world.json, pins, truth/)."""
    world_dir = Path(world_dir)
    doc = json.loads((world_dir / "world.json").read_text())
    if "conversions" not in doc["truth"]:
        raise InputError(f"{world_dir} holds no conversion truth (generated before sessions)")
    cfg = WorldConfig.from_json(doc["config"])
    prior = np.asarray(doc["interests"]["prior"], dtype=np.float64)
    pools = build_pools(_catalog(world_dir, doc["truth"]["pins"], prior), cfg)
    first_ms = (cfg.first_date - dt.date(1970, 1, 1)).days * DAY_MS
    truth = _conversions(world_dir / doc["truth"]["conversions"], first_ms)
    return Oracle(pools, prior, cfg.noise_rate, truth)


def _catalog(world_dir: Path, pin_truth: str, prior: np.ndarray) -> Catalog:
    """The generator's catalogue, read back from the pins table and truth/pins (what
    ``build_pools`` needs is there exactly: float32 confidences, float64 popularity)."""
    pins = pq.read_table(world_dir / "pins").sort_by("pin_id")
    truth = pq.read_table(world_dir / pin_truth).sort_by("pin_id")
    n = pins.num_rows
    ids = np.full((n, PIN_SLOTS), -1, dtype=np.int32)
    conf = np.zeros((n, PIN_SLOTS), dtype=np.float32)
    lists = pins.column("interest_ids").combine_chunks()
    lengths = pc.list_value_length(lists).to_numpy().astype(np.int64)
    row = np.repeat(np.arange(n), lengths)
    slot = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids[row, slot] = pc.list_flatten(lists).to_numpy()
    confs = pins.column("interest_confidences").combine_chunks()
    conf[row, slot] = pc.list_flatten(confs).to_numpy()
    peak = truth.column("trending_peak_day")
    trending = np.flatnonzero(pc.is_valid(peak).to_numpy())
    original = truth.column("original_pin_id").fill_null(0).to_numpy().astype(np.int64) - 1
    return Catalog(
        interest_prior=prior,
        interest_ids=ids,
        confidences=conf,
        popularity=truth.column("popularity").to_numpy(),
        rank=truth.column("rank").to_numpy(),
        signature=np.zeros(n, dtype=np.uint64),  # not needed to score
        original=original,
        trending=trending.astype(np.int64),
        peak_day=peak.drop_null().to_numpy().astype(np.int64),
    )


def _conversions(path: Path, first_ms: int) -> ConversionTruth:
    columns = ["user_id", "event_ts", "interest", "shown_interest", "session", "explore"]
    table = pq.read_table(path, columns=columns)
    ts = table.column("event_ts").cast(pa.int64()).to_numpy()
    user = table.column("user_id").to_numpy()
    order = np.lexsort((ts, user))  # stable: lake order (ms order) among ties

    def col(name: str) -> np.ndarray:
        return table.column(name).to_numpy()[order]

    return ConversionTruth(
        user_id=user[order],
        ts_ms=ts[order],
        day=(ts[order] - first_ms) // DAY_MS,
        interest=col("interest").astype(np.int64),
        shown=col("shown_interest").astype(np.int64),
        session=col("session"),
        explore=col("explore"),
    )
