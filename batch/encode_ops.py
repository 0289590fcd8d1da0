"""The vectorised work of the daily encode job, free of Beam and of I/O.

Elements of the job are Arrow tables, never single events (Beam Python moves ~40k
elements/s on the DirectRunner, a day of offsite history is ~50M events):

1. ``compact_events``: a row group of the lake -> (user_id, pin_id, action code, ts_ms),
   ~25 bytes a row instead of ~60 (``event_id`` and the action strings never travel).
2. ``spill_by_shard``: that table -> one Arrow IPC file on disk holding one record batch
   per hash shard of user_id, and a small ``SpilledPart`` reference per shard. Only the
   references go through the GroupByKey, so the runner never holds the day's events in
   memory (it buffers a GroupByKey's whole input: ~1.3 GB of events at 1M users x 50,
   and about as much again while it regroups them). ``split_by_shard`` is the in-memory
   variant (tables through the shuffle) for a pipeline without a shared directory.
3. ``encode_shard``: every part of one shard -> one ``USER_HISTORY_STATE`` table, the
   last ``max_len`` events of each user run through the ``SequenceEncoder``
   (``model.encode_fast``: same states, about half the CPU time of ``forward``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import torch

from model.encode_fast import encode_states
from model.features import build_encoder_inputs, sequence_events
from model.tables import EventLog, PinTable
from model.towers import SequenceEncoder
from schemas.arrow import TS, USER_HISTORY_STATE
from towerline.core.contracts import CONVERSION_ACTIONS

# What the job reads of the lake: event_id is never needed.
EVENT_COLUMNS = ["user_id", "pin_id", "action", "event_ts"]
COMPACT = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("pin_id", pa.int64(), nullable=False),
        pa.field("action", pa.int8(), nullable=False),  # 1 + CONVERSION_ACTIONS index, 0 unknown
        pa.field("ts_ms", pa.int64(), nullable=False),
    ]
)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads sequential ids evenly


def compact_events(events: pa.Table) -> pa.Table:
    """Lake rows (n, ``EVENT_COLUMNS``) -> (n, ``COMPACT``), action coded as in training
    (``model.lake_io.read_events``: 1 + index in CONVERSION_ACTIONS, unknown -> 0)."""
    symbols = pa.array(CONVERSION_ACTIONS, pa.string())
    codes = pc.index_in(events["action"], value_set=symbols).fill_null(-1)
    return pa.table(
        [
            events["user_id"],
            events["pin_id"],
            pc.add(codes, 1).cast(pa.int8()),
            events["event_ts"].cast(pa.int64()),
        ],
        schema=COMPACT,
    )


def shard_of(user_ids: np.ndarray, shards: int) -> np.ndarray:
    """(n,) int64 ids -> (n,) int64 shard in [0, shards); stable across processes (no
    ``hash()``: the same user must land in the same shard on every worker and every run)."""
    mixed = np.asarray(user_ids).astype(np.uint64) * _GOLDEN
    return ((mixed >> np.uint64(32)) % np.uint64(shards)).astype(np.int64)


def split_by_shard(events: pa.Table, shards: int) -> Iterator[tuple[int, pa.Table]]:
    """(n, COMPACT) -> (shard, its rows) for every non-empty shard.

    Each part is a copy (``take``), not a slice: pickling a slice would ship the whole
    parent buffer through the shuffle."""
    shard = shard_of(events["user_id"].to_numpy(), shards)
    order = np.argsort(shard, kind="stable")
    counts = np.bincount(shard, minlength=shards)
    for key, rows in enumerate(np.split(order, np.cumsum(counts)[:-1])):
        if len(rows):
            yield key, events.take(rows)


@dataclasses.dataclass(frozen=True)
class SpilledPart:
    """One shard's rows of one input table, waiting on disk for the encode step: record
    batch ``batch`` of the Arrow IPC file ``path`` (``rows`` rows of ``COMPACT``)."""

    path: str
    batch: int
    rows: int


def spill_by_shard(
    events: pa.Table, shards: int, directory: str
) -> Iterator[tuple[int, SpilledPart]]:
    """(n, COMPACT) -> one IPC file in ``directory`` (rows grouped by shard, one record
    batch per non-empty shard) and (shard, its ``SpilledPart``) for each of them.

    The file gets a fresh name: a retried bundle writes a new one and the references of
    the failed attempt are never emitted (the job deletes the directory at the end)."""
    if events.num_rows == 0:
        return
    shard = shard_of(events["user_id"].to_numpy(), shards)
    order = np.argsort(shard, kind="stable")
    counts = np.bincount(shard, minlength=shards)
    grouped = events.take(order).combine_chunks()
    batch = pa.record_batch([grouped[name].chunk(0) for name in COMPACT.names], schema=COMPACT)
    path = str(Path(directory) / f"{uuid.uuid4().hex}.arrow")
    parts, offset = [], 0
    with pa.OSFile(path, "wb") as sink, ipc.new_file(sink, COMPACT) as writer:
        for key in np.flatnonzero(counts):
            rows = int(counts[key])
            writer.write_batch(batch.slice(offset, rows))
            parts.append((int(key), SpilledPart(path, len(parts), rows)))
            offset += rows
    yield from parts


def load_parts(parts: Iterable[pa.Table | SpilledPart]) -> list[pa.Table]:
    """A shard's grouped elements -> its COMPACT tables (spilled parts read back)."""
    tables = []
    for part in parts:
        if isinstance(part, SpilledPart):
            with pa.OSFile(part.path, "rb") as source:
                part = pa.Table.from_batches([ipc.open_file(source).get_batch(part.batch)])
        tables.append(part)
    return tables


def sorted_log(tables: Iterable[pa.Table]) -> EventLog:
    """COMPACT tables of one shard, in any order -> ``EventLog`` sorted by (user, ts).

    Ties are broken by (ts_ms, pin, action) so the result does not depend on the order
    in which the shuffle delivered the tables: reruns encode identical sequences."""
    parts = list(tables)
    table = pa.concat_tables(parts) if parts else COMPACT.empty_table()
    user, pin = table["user_id"].to_numpy(), table["pin_id"].to_numpy()
    action = table["action"].to_numpy().astype(np.int64)
    ts_ms = table["ts_ms"].to_numpy()
    order = np.lexsort((action, pin, ts_ms, user))
    # Whole seconds, as training reads them (model.lake_io.read_events).
    return EventLog(user[order], pin[order], action[order], ts_ms[order] // 1000)


@dataclasses.dataclass(frozen=True)
class EncodedUsers:
    """The states of U users and what they were encoded from."""

    users: np.ndarray  # (U,) int64 ids
    hidden: np.ndarray  # (U, d) float32
    lengths: np.ndarray  # (U,) int32 events encoded (<= max_len)
    last_event_ts_ms: np.ndarray  # (U,) int64 time of each user's newest event


@torch.inference_mode()
def encode_users(
    encoder: SequenceEncoder, log: EventLog, pins: PinTable, max_len: int, batch_size: int
) -> EncodedUsers:
    """Sorted log of U users -> their states (``EncodedUsers``).

    Users are batched by decreasing length so a batch pads to its own longest row, not to
    ``max_len``; causal attention makes the padding irrelevant to the state."""
    events = sequence_events(log, pins)
    users, starts, ends = log.user_bounds()
    lengths = np.minimum(ends - starts, max_len)
    hidden = np.zeros((len(users), encoder.cfg.d_model), dtype=np.float32)
    order = np.argsort(-lengths, kind="stable")
    for first in range(0, len(order), batch_size):
        rows = order[first : first + batch_size]
        inputs = build_encoder_inputs(events, starts[rows], ends[rows], max_len)
        hidden[rows] = encode_states(encoder, **inputs.tensors()).numpy()
    last_ms = log.ts[ends - 1].astype(np.int64) * 1000  # the log holds whole seconds
    return EncodedUsers(users, hidden, lengths.astype(np.int32), last_ms)


def states_table(encoded: EncodedUsers, version: str, event_ms: int) -> pa.Table:
    """Encoded users -> U rows of ``USER_HISTORY_STATE``."""
    n, d = encoded.hidden.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    columns = [
        pa.array(encoded.users, pa.int64()),
        pa.repeat(pa.scalar(version, pa.string()), n),
        pa.ListArray.from_arrays(offsets, pa.array(encoded.hidden.reshape(-1), pa.float32())),
        pa.array(encoded.lengths, pa.int32()),
        pa.array(encoded.last_event_ts_ms, pa.int64()),
        pa.array(np.full(n, event_ms, dtype=np.int64), TS),
    ]
    return pa.Table.from_arrays(columns, schema=USER_HISTORY_STATE)


def encode_shard(
    tables: Iterable[pa.Table],
    encoder: SequenceEncoder,
    pins: PinTable,
    *,
    version: str,
    event_ms: int,
    max_len: int,
    batch_size: int,
) -> pa.Table:
    """COMPACT tables of one shard -> one state row per user, sorted by user_id."""
    log = sorted_log(tables)
    return states_table(encode_users(encoder, log, pins, max_len, batch_size), version, event_ms)


def end_of_day_ms(day: dt.date) -> int:
    """Milliseconds since the epoch of the midnight (UTC) that ends ``day``: the state
    covers every event before this instant, so it is the row's event_timestamp."""
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(end.timestamp() * 1000)
