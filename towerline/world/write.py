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
from towerline.world.pins import Catalog
from towerline.world.sample import hex16
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
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": ["action"]}


def _lists(values: np.ndarray, valid: np.ndarray, type_: pa.DataType) -> pa.ListArray:
    """Rows of ``values`` (n, S) where ``valid`` (n, S) -> n lists, in slot order."""
    offsets = np.concatenate(([0], np.cumsum(valid.sum(axis=1)))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[valid], type=type_))


def _timestamps(ms: np.ndarray | int, n: int) -> pa.Array:
    return pa.array(np.broadcast_to(np.int64(ms), (n,)), type=TS)


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
    number = pa.array(np.arange(first_id, first_id + len(user_id), dtype=np.int64))
    event_id = pc.binary_join_element_wise(prefix, number.cast(pa.string()), "")
    columns = {
        "event_id": event_id,
        "user_id": pa.array(user_id, type=pa.int64()),
        "pin_id": pa.array(pin_id, type=pa.int64()),
        "action": pa.array(symbols, type=pa.string()).take(pa.array(action)),
        "event_ts": pa.array(ts_ms, type=TS),
    }
    return pa.table(columns).cast(schema)


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
