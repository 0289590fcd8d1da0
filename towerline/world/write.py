"""Arrow tables and files of a generated world: the lake tables, truth and world.json.

Every lake table is cast to its contract schema in ``schemas.arrow`` before it is written.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.arrow import PIN_PROFILE, TS, USER_PROFILE
from towerline.core.files import write_text_atomic
from towerline.world.events import DayEvents, Intents
from towerline.world.pins import Catalog
from towerline.world.sample import hex16
from towerline.world.sessions import SessionPlan
from towerline.world.users import DEMOGRAPHICS, Population

USER_TRUTH = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("interest_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("weights", pa.list_(pa.float32()), nullable=False),
        pa.field("drift", pa.list_(pa.float32()), nullable=False),
        pa.field("activity", pa.float32(), nullable=False),
    ]
)
PIN_TRUTH = pa.schema(
    [
        pa.field("pin_id", pa.int64(), nullable=False),
        pa.field("popularity", pa.float64(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("original_pin_id", pa.int64()),
        pa.field("trending_peak_day", pa.int32()),
    ]
)
# One row per offsite conversion, in lake order (event ids ascending): see worlddoc.
CONVERSION_TRUTH = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("event_ts", TS, nullable=False),
        pa.field("pin_id", pa.int64(), nullable=False),
        pa.field("interest", pa.int32(), nullable=False),
        pa.field("shown_interest", pa.int32(), nullable=False),
        pa.field("chain_interest", pa.int32(), nullable=False),
        pa.field("noise", pa.bool_(), nullable=False),
        pa.field("session", pa.bool_(), nullable=False),
        pa.field("explore", pa.bool_(), nullable=False),
        pa.field("session_engagements", pa.int8(), nullable=False),
        pa.field("session_event_id", pa.string()),
        pa.field("session_gap_ms", pa.int64()),
    ]
)
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": ["action"]}


def _lists(values: np.ndarray, valid: np.ndarray, type_: pa.DataType) -> pa.ListArray:
    """Rows of ``values`` (n, S) where ``valid`` (n, S) -> n lists, in slot order."""
    offsets = np.concatenate(([0], np.cumsum(valid.sum(axis=1)))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[valid], type=type_))


def _timestamps(ms: np.ndarray | int, n: int) -> pa.Array:
    return pa.array(np.broadcast_to(np.int64(ms), (n,)), type=TS)


def _event_ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    """Event numbers (N,) -> ``prefix + number`` strings (N,)."""
    number = pa.array(numbers, type=pa.int64()).cast(pa.string())
    return pc.binary_join_element_wise(prefix, number, "")


def event_table(
    schema: pa.Schema,
    prefix: str,
    first_id: int,
    user_id: np.ndarray,
    pin_id: np.ndarray,
    action: np.ndarray,
    ts_ms: np.ndarray,
    symbols: tuple[str, ...],
) -> pa.Table:
    """Events (N,) -> table of ``schema``; event_id = prefix + (first_id + row)."""
    columns = {
        "event_id": _event_ids(prefix, np.arange(first_id, first_id + len(user_id))),
        "user_id": pa.array(user_id, type=pa.int64()),
        "pin_id": pa.array(pin_id, type=pa.int64()),
        "action": pa.array(symbols, type=pa.string()).take(pa.array(action)),
        "event_ts": pa.array(ts_ms, type=TS),
    }
    return pa.table(columns).cast(schema)


def conversion_truth_table(
    first_id: int,
    user_ids: np.ndarray,
    events: DayEvents,
    intents: Intents,
    plan: SessionPlan,
    session_ids: np.ndarray,
    session_ts_ms: np.ndarray,
) -> pa.Table:
    """Planted truth of a chunk's N conversions (CONVERSION_TRUTH, in ``events`` order,
    whose event ids are "o-" + first_id + row); ``user_ids`` (n,) of the chunk's local
    users; ``session_ids`` / ``session_ts_ms`` (S,) event number and time of each session
    engagement of ``plan``."""
    n = len(events.user)
    newest = plan.newest
    has = newest >= 0
    # A trailing sentinel makes the -1 of "no session" a valid index (masked below).
    newest_id = np.append(session_ids, 0)[newest]
    newest_ts = np.append(session_ts_ms, 0)[newest]
    columns = {
        "event_id": _event_ids("o-", np.arange(first_id, first_id + n)),
        "user_id": pa.array(user_ids[events.user], type=pa.int64()),
        "event_ts": pa.array(events.ts_ms, type=TS),
        "pin_id": pa.array(events.pin + 1, type=pa.int64()),
        "interest": pa.array(intents.intent, type=pa.int32()),
        "shown_interest": pa.array(intents.shown, type=pa.int32()),
        "chain_interest": pa.array(intents.chain, type=pa.int32()),
        "noise": pa.array(intents.noise),
        "session": pa.array(plan.session),
        "explore": pa.array(plan.explore),
        "session_engagements": pa.array(plan.count, type=pa.int8()),
        "session_event_id": pc.if_else(pa.array(has), _event_ids("e-", newest_id), None),
        "session_gap_ms": pa.array(events.ts_ms - newest_ts, type=pa.int64(), mask=~has),
    }
    return pa.table(columns).cast(CONVERSION_TRUTH)


def pin_table(catalog: Catalog, updated_ms: int) -> pa.Table:
    """The pins snapshot (P rows), PIN_PROFILE."""
    n = len(catalog.popularity)
    valid = catalog.interest_ids >= 0
    chars = hex16(catalog.signature)
    signature = pa.Array.from_buffers(
        pa.string(),
        n,
        [None, pa.py_buffer(np.arange(0, 16 * (n + 1), 16, dtype=np.int32)), pa.py_buffer(chars)],
    )
    columns = {
        "pin_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "interest_ids": _lists(catalog.interest_ids, valid, pa.int32()),
        "interest_confidences": _lists(catalog.confidences, valid, pa.float32()),
        "image_signature": signature,
        "updated_ts": _timestamps(updated_ms, n),
    }
    return pa.table(columns).cast(PIN_PROFILE)


def pin_truth_table(catalog: Catalog) -> pa.Table:
    """Planted per-pin truth (P rows), PIN_TRUTH; trending_peak_day is a day index."""
    n = len(catalog.popularity)
    peak = np.full(n, -1, dtype=np.int32)
    peak[catalog.trending] = catalog.peak_day
    columns = {
        "pin_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "popularity": pa.array(catalog.popularity),
        "rank": pa.array(catalog.rank),
        "original_pin_id": pa.array(catalog.original + 1, mask=catalog.original < 0),
        "trending_peak_day": pa.array(peak, mask=peak < 0),
    }
    return pa.table(columns).cast(PIN_TRUTH)


def user_table(pop: Population, updated_ms: int) -> pa.Table:
    """A chunk of the users snapshot (n rows), USER_PROFILE."""
    columns: dict[str, pa.Array] = {"user_id": pa.array(pop.user_ids, type=pa.int64())}
    for name, (symbols, _) in DEMOGRAPHICS.items():
        columns[name] = pa.array(symbols, type=pa.string()).take(pa.array(pop.demographics[name]))
    columns["updated_ts"] = _timestamps(updated_ms, len(pop.user_ids))
    return pa.table(columns).cast(USER_PROFILE)


def user_truth_table(pop: Population) -> pa.Table:
    """A chunk of the planted per-user truth (n rows), USER_TRUTH."""
    valid = pop.interest_ids >= 0
    columns = {
        "user_id": pa.array(pop.user_ids, type=pa.int64()),
        "interest_ids": _lists(pop.interest_ids, valid, pa.int32()),
        "weights": _lists(np.exp(pop.log_weights), valid, pa.float32()),
        "drift": _lists(pop.drift, valid, pa.float32()),
        "activity": pa.array(pop.activity, type=pa.float32()),
    }
    return pa.table(columns).cast(USER_TRUTH)


def write_table(table: pa.Table, path: Path) -> None:
    """One Parquet file (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **PARQUET_OPTIONS)


def write_json(doc: dict[str, Any], path: Path) -> None:
    """``doc`` as indented JSON, written to a temp name then renamed (complete or absent)."""
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


class BackgroundWriter:
    """Writes Parquet files on one worker thread while the caller samples the next chunk
    (Arrow encoding and Parquet writing release the GIL, so the two cores overlap).

    ``drain()`` waits for everything submitted so far and re-raises the first error.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="world-writer")
        self._pending: list[Future[None]] = []

    def submit(self, fn: Any, *args: Any) -> None:
        self._pending.append(self._pool.submit(fn, *args))

    def drain(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
