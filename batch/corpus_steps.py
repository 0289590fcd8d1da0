"""Steps of the serving corpus job (batch.corpus): decay, dedup by image signature, top M.

    score(pin) = sum over its engagements of  w[action] * 2 ** (-(T_end - ts) / H)

over the ``window_days`` (90) days ending at ``T_end`` = the end of DATE (UTC). Pins that
share an image signature collapse onto the most engaged one (ties: smallest pin id); the
top M canonical pins form the snapshot. Elements are Arrow record batches and per-shard
numpy arrays, never single events (the DirectRunner moves ~40k elements/s)::

    engagements ─ ScoreBatch ─(pin shard)─ GroupByKey ─ sum ┐
    pins/ ─────── ShardPins ──(pin shard)───────────────────┴ CoGroupByKey ─ join profiles
      ─(signature shard)─ GroupByKey ─ canonical per signature ─ CombineGlobally(TopRows)

Pure functions and composite PTransforms, no I/O: reading and writing live in batch.corpus.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from towerline.core.contracts import ENGAGEMENT_ACTIONS
from towerline.core.errors import InputError

DAY_MS = 86_400_000
NAMESPACE = "corpus"  # Beam metrics namespace of the counters below
DEFAULT_WEIGHTS = (("CLOSEUP", 1.0), ("CLICK", 2.0), ("SAVE", 4.0), ("SHARE", 4.0))
PIN_COLUMNS = ["pin_id", "interest_ids", "interest_confidences", "image_signature", "updated_ts"]
_LIST_IDS, _LIST_CONF = pa.list_(pa.int32()), pa.list_(pa.float32())
# One row per canonical pin while the job runs; ``pin_ids`` = every engaged pin of its
# signature, canonical first. The written files are projections of it (batch.corpus).
CANDIDATES = pa.schema(
    [
        ("pin_id", pa.int64()),
        ("image_signature", pa.string()),
        ("score", pa.float64()),
        ("interest_ids", _LIST_IDS),
        ("interest_confidences", _LIST_CONF),
        ("pin_ids", pa.list_(pa.int64())),
    ]
)


class CorpusError(InputError):
    """The corpus cannot be built from what was given."""


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """One corpus run: snapshot date, half-life H (days), action weights, window, top M."""

    day: dt.date
    half_life_days: float
    weights: tuple[tuple[str, float], ...] = DEFAULT_WEIGHTS
    window_days: int = 90
    top_m: int = 1_000_000
    shards: int = 16

    def __post_init__(self) -> None:
        unknown = {a for a, _ in self.weights} - set(ENGAGEMENT_ACTIONS)
        if unknown:
            raise CorpusError(f"unknown actions {sorted(unknown)}; known: {ENGAGEMENT_ACTIONS}")
        if self.half_life_days <= 0 or min(self.window_days, self.top_m, self.shards) < 1:
            raise CorpusError(f"half-life, window, top M and shards must be positive: {self}")

    @property
    def end_ms(self) -> int:
        """T_end: midnight UTC after ``day``, in epoch milliseconds."""
        end = dt.datetime.combine(self.day + dt.timedelta(days=1), dt.time(), dt.UTC)
        return int(end.timestamp() * 1000)

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.window_days * DAY_MS

    @property
    def first_day(self) -> dt.date:
        return self.day - dt.timedelta(days=self.window_days - 1)

    def to_json(self) -> dict:
        return {
            "dt": self.day.isoformat(),
            "half_life_days": self.half_life_days,
            "weights": dict(self.weights),
            "window": {"start": self.first_day.isoformat(), "end": self.day.isoformat()},
            "top_m": self.top_m,
        }


def decayed_scores(batch: pa.Table, cfg: CorpusConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Engagements (n rows) -> distinct pins (P,) int64 and their summed decayed weights
    (P,) float64, plus counts {events, in_window, unknown_action}. Vectorised."""
    ts = batch["event_ts"].cast(pa.int64()).to_numpy()
    names = pa.array([a for a, _ in cfg.weights], pa.string())
    code = pc.index_in(batch["action"], value_set=names).fill_null(-1).to_numpy()
    weight = np.append(np.array([w for _, w in cfg.weights], np.float64), 0.0)[code]
    keep = (ts >= cfg.start_ms) & (ts < cfg.end_ms) & (code >= 0)
    age_days = (cfg.end_ms - ts[keep]) / DAY_MS
    values = weight[keep] * np.exp2(-age_days / cfg.half_life_days)
    pins, inverse = np.unique(batch["pin_id"].to_numpy()[keep], return_inverse=True)
    counts = {
        "events": len(ts),
        "in_window": int(keep.sum()),
        "unknown_action": int((code < 0).sum()),
    }
    return pins, np.bincount(inverse, weights=values, minlength=len(pins)), counts


def split_by(keys: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(key, row indices) for each distinct value of ``keys`` (n,)."""
    if len(keys) == 0:
        return
    order = np.argsort(keys, kind="stable")
    distinct, starts = np.unique(keys[order], return_index=True)
    yield from zip(distinct.tolist(), np.split(order, starts[1:]), strict=True)


def signature_shards(signatures: pa.ChunkedArray | pa.Array, shards: int) -> np.ndarray:
    """Stable shard of each signature (crc32, hashed once per distinct value; Python's
    ``hash`` differs between worker processes)."""
    encoded = pc.dictionary_encode(signatures)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = [zlib.crc32(s.encode()) % shards for s in encoded.dictionary.to_pylist()]
    return (
        np.asarray(codes, np.int64)[encoded.indices.to_numpy()] if codes else np.zeros(0, np.int64)
    )


class ScoreBatch(beam.DoFn):
    """Engagement record batch -> (pin shard, (pins (P,), scores (P,))) partial sums."""

    def __init__(self, cfg: CorpusConfig) -> None:
        self.cfg = cfg
        self.counters = {
            n: Metrics.counter(NAMESPACE, n) for n in ("events", "in_window", "unknown_action")
        }

    def process(self, batch: pa.Table) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
        pins, scores, counts = decayed_scores(batch, self.cfg)
        for name, value in counts.items():
            self.counters[name].inc(value)
        for shard, rows in split_by(pins % self.cfg.shards):
            yield shard, (pins[rows], scores[rows])


def sum_shard(parts: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Partial sums of one shard -> (pins (P,), scores (P,)). Summed in (pin, value) order,
    so the result does not depend on the order the parts arrive in."""
    parts = list(parts)
    pins = np.concatenate([p for p, _ in parts])
    scores = np.concatenate([s for _, s in parts])
    order = np.lexsort((scores, pins))
    distinct, inverse = np.unique(pins[order], return_inverse=True)
    return distinct, np.bincount(inverse, weights=scores[order], minlength=len(distinct))


class PinScores(beam.PTransform):
    """PCollection[engagement record batch] -> PCollection[(shard, (pins, scores))]."""

    def __init__(self, cfg: CorpusConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, batches):
        return (
            batches
            | "ScoreBatch" >> beam.ParDo(ScoreBatch(self.cfg))
            | "GroupByPinShard" >> beam.GroupByKey()
            | "SumShard" >> beam.MapTuple(lambda shard, parts: (shard, sum_shard(parts)))
        )


def shard_pins(batch: pa.Table, shards: int) -> Iterator[tuple[int, pa.Table]]:
    """Pin profile record batch -> (pin shard, its rows)."""
    for shard, rows in split_by(batch["pin_id"].to_numpy() % shards):
        yield shard, batch.select(PIN_COLUMNS).take(pa.array(rows))


def join_profiles(scored: list, profiles: list[pa.Table]) -> pa.Table:
    """One shard: scored pins joined with their latest profile row -> CANDIDATES rows
    (pins without a profile are dropped: no signature and no interests to embed)."""
    if not scored:
        return CANDIDATES.empty_table()
    pins, scores = scored[0]
    Metrics.counter(NAMESPACE, "engaged_pins").inc(len(pins))
    if not profiles:
        Metrics.counter(NAMESPACE, "pins_without_profile").inc(len(pins))
        return CANDIDATES.empty_table()
    table = pa.concat_tables(profiles)
    order = pc.sort_indices(table, [("pin_id", "ascending"), ("updated_ts", "ascending")])
    table = table.take(order)
    ids = table["pin_id"].to_numpy()
    last = np.append(ids[1:] != ids[:-1], True)  # the newest row of each pin
    table, ids = table.filter(pa.array(last)), ids[last]
    row = np.minimum(np.searchsorted(ids, pins), len(ids) - 1)
    found = ids[row] == pins
    Metrics.counter(NAMESPACE, "pins_without_profile").inc(int((~found).sum()))
    hit = table.take(pa.array(row[found]))
    singles = pa.ListArray.from_arrays(
        pa.array(np.arange(found.sum() + 1, dtype=np.int32)), pa.array(pins[found])
    )
    columns = [hit["pin_id"], hit["image_signature"], pa.array(scores[found]), hit["interest_ids"]]
    columns += [hit["interest_confidences"], singles]
    return pa.Table.from_arrays(columns, schema=CANDIDATES)


def canonical_rows(table: pa.Table) -> pa.Table:
    """CANDIDATES rows -> one row per image signature: the highest score (ties: smallest
    pin id), whose ``pin_ids`` lists every pin of the signature, canonical first."""
    keys = [("image_signature", "ascending"), ("score", "descending"), ("pin_id", "ascending")]
    table = table.take(pc.sort_indices(table, keys)).combine_chunks()
    sig = table["image_signature"].chunk(0) if table.num_rows else pa.array([], pa.string())
    first = np.ones(table.num_rows, bool)
    first[1:] = pc.not_equal(sig[1:], sig[:-1]).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(first)
    offsets = pa.array(np.append(starts, table.num_rows).astype(np.int32))
    members = pa.ListArray.from_arrays(offsets, table["pin_id"].combine_chunks())
    return table.take(pa.array(starts)).set_column(5, "pin_ids", members)


def top_rows(table: pa.Table, m: int) -> pa.Table:
    """The ``m`` rows of highest score (ties: smallest pin id), best first."""
    order = pc.sort_indices(table, [("score", "descending"), ("pin_id", "ascending")])
    return table.take(order[:m])


class TopRows(beam.CombineFn):
    """Tables of canonical rows -> one table of the best M (bounded accumulator)."""

    def __init__(self, m: int) -> None:
        self.m = m

    def create_accumulator(self) -> pa.Table:
        return CANDIDATES.empty_table()

    def add_input(self, acc: pa.Table, table: pa.Table) -> pa.Table:
        return top_rows(pa.concat_tables([acc, table]), self.m)

    def merge_accumulators(self, accumulators: Iterable[pa.Table]) -> pa.Table:
        return top_rows(pa.concat_tables(list(accumulators)), self.m)

    def extract_output(self, acc: pa.Table) -> pa.Table:
        return top_rows(acc, self.m)


def _by_signature_shard(table: pa.Table, shards: int) -> Iterator[tuple[int, pa.Table]]:
    for shard, rows in split_by(signature_shards(table["image_signature"], shards)):
        yield shard, table.take(pa.array(rows))


class BuildCorpus(beam.PTransform):
    """(engagement record batches, pin profile record batches) -> one CANDIDATES table of
    the top M canonical pins, best first. Does no I/O."""

    def __init__(self, cfg: CorpusConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, inputs):
        engagements, pins = inputs
        shards, m = self.cfg.shards, self.cfg.top_m
        scored = engagements | "PinScores" >> PinScores(self.cfg)
        profiles = pins | "ShardPins" >> beam.FlatMap(shard_pins, shards)
        return (
            {"scored": scored, "profiles": profiles}
            | "JoinByPinShard" >> beam.CoGroupByKey()
            | "JoinProfiles"
            >> beam.MapTuple(lambda _, g: join_profiles(list(g["scored"]), list(g["profiles"])))
            | "BySignatureShard" >> beam.FlatMap(_by_signature_shard, shards)
            | "GroupBySignatureShard" >> beam.GroupByKey()
            | "Canonical"
            >> beam.MapTuple(lambda _, tables: canonical_rows(pa.concat_tables(tables)))
            | "TopM" >> beam.CombineGlobally(TopRows(m))
        )
