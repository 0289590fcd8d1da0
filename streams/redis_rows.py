"""A user's sequence as Redis bytes: its Feast row values and its state blob, built once.

Both come from the same two packed ``Int64List`` messages (protobuf's C encoder), so the
state costs little more than the Feast row. This runs once per touched user per batch,
the hottest path of the worker: ~4 µs for a short sequence, ~13 µs for 50 entries.

State blob: ``<B version=2><H n><I len ts><I len pins><I len ids>``, the ``Int64List`` of
event times, the ``Int64List`` of pin ids, n action bytes, n ``<H>`` id lengths, the ids.
"""

import struct

from feast.protos.feast.types.Value_pb2 import Int64List

from streams.feast_layout import (
    ACTION_ENTRIES,
    INT64_LIST_TAG,
    STRING_LIST_TAG,
    packed_int64,
    varint,
)
from streams.sequence import Entry, Seq

_VERSION = 2
_HEAD = struct.Struct("<BHIII")
_new = tuple.__new__
_ACTION_BYTE = [bytes((a,)) for a in range(len(ACTION_ENTRIES))]
_ONE_NAME = [STRING_LIST_TAG + varint(len(name)) + name for name in ACTION_ENTRIES]


def encode_user(seq: Seq, updated: bytes) -> tuple[bytes, list[bytes]]:
    """(state blob, Feast values in ``USER_FEATURES`` order); ``updated`` is pre-encoded."""
    if len(seq) == 1:
        return _encode_one(seq[0], updated)
    return _encode_many(seq, updated)


def _encode_many(seq: Seq, updated: bytes) -> tuple[bytes, list[bytes]]:
    times, ids, pins, actions = zip(*seq, strict=True)
    ts_list = Int64List(val=times).SerializeToString()
    pin_list = Int64List(val=pins).SerializeToString()
    joined = "".join(ids)
    if joined.isascii():  # one encode for all ids; lengths in bytes = lengths in chars
        raw, lengths = joined.encode(), [len(i) for i in ids]
    else:
        encoded = [i.encode() for i in ids]
        raw, lengths = b"".join(encoded), [len(i) for i in encoded]
    n = len(seq)
    state = b"".join(
        (
            _HEAD.pack(_VERSION, n, len(ts_list), len(pin_list), len(raw)),
            ts_list,
            pin_list,
            bytes(actions),
            struct.pack(f"<{n}H", *lengths),
            raw,
        )
    )
    names = b"".join([ACTION_ENTRIES[a] for a in actions])
    values = [
        INT64_LIST_TAG + varint(len(pin_list)) + pin_list,
        INT64_LIST_TAG + varint(len(ts_list)) + ts_list,
        STRING_LIST_TAG + varint(len(names)) + names,
        updated,
    ]
    return state, values


_ONE_ID = struct.Struct("<H")


def _encode_one(entry: Entry, updated: bytes) -> tuple[bytes, list[bytes]]:
    """``encode_user`` of a one-entry sequence, byte for byte: most users a batch touches
    are new to the worker's cache (a user engages rarely), and this path skips the
    transposing, the per-call struct formats and the protobuf messages."""
    ts_ms, event_id, pin_id, action = entry
    ts_list = packed_int64(ts_ms, ms=True)
    pin_list = packed_int64(pin_id)
    raw = event_id.encode()
    state = b"".join(
        (
            _HEAD.pack(_VERSION, 1, len(ts_list), len(pin_list), len(raw)),
            ts_list,
            pin_list,
            _ACTION_BYTE[action],
            _ONE_ID.pack(len(raw)),
            raw,
        )
    )
    return state, [
        INT64_LIST_TAG + varint(len(pin_list)) + pin_list,
        INT64_LIST_TAG + varint(len(ts_list)) + ts_list,
        _ONE_NAME[action],
        updated,
    ]


def decode_user(blob: bytes) -> Seq:
    """Inverse of the state half of ``encode_user``."""
    version, n, ts_len, pin_len, raw_len = _HEAD.unpack_from(blob)
    if version != _VERSION:
        raise ValueError(f"unknown user state version {version}")
    pos = _HEAD.size
    times = Int64List.FromString(blob[pos : pos + ts_len]).val
    pos += ts_len
    pins = Int64List.FromString(blob[pos : pos + pin_len]).val
    pos += pin_len
    actions = blob[pos : pos + n]
    pos += n
    lengths = struct.unpack_from(f"<{n}H", blob, pos)
    pos += 2 * n
    out = []
    for i in range(n):
        event_id = blob[pos : pos + lengths[i]].decode()
        pos += lengths[i]
        out.append(_new(Entry, (times[i], event_id, pins[i], actions[i])))
    return tuple(out)
