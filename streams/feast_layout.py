"""The two stream views' rows as the state store writes them into Feast's online storage.

The worker writes Feast rows in the *same* transaction as its state and applied offsets
(one Lua script on Redis, one SQLite transaction), which is what keeps the online copy
exactly-once after a crash. Where Feast keeps rows (entity keys, hash fields, tables) is
known by ``towerline.core.online_layout``, which the freshness monitor's scans share; this
module adds the checks of the stream views and the fast encoders of their values.
``tests/streams/test_state_store.py`` and ``tests/core/test_online_layout.py`` pin both by
comparing what we write with what Feast's own ``online_write_batch`` writes, byte for
byte, and reading it back through ``get_online_features``.
"""

import dataclasses
import functools
from dataclasses import dataclass

import feast
from feast.protos.feast.types.Value_pb2 import Int64List, StringList, Value

from streams.decay import Decayed
from streams.sequence import Seq
from towerline.core import online_layout
from towerline.core.contracts import (
    ENGAGEMENT_ACTIONS,
    PIN_ENGAGEMENT,
    USER_REALTIME_SEQ,
    VIEW_FEATURES,
)
from towerline.core.online_layout import EntityKeys, LayoutError, redis_client, sqlite_path

__all__ = ["EntityKeys", "LayoutError", "StoreLayout", "ViewLayout", "layout_of", "redis_client", "sqlite_path"]  # fmt: skip

USER_VIEW, PIN_VIEW = USER_REALTIME_SEQ, PIN_ENGAGEMENT
USER_FEATURES, PIN_FEATURES = VIEW_FEATURES[USER_VIEW], VIEW_FEATURES[PIN_VIEW]
OPTIONAL_FEATURES = frozenset({"updated_ts_ms"})


def user_values(seq: Seq, updated_ms: int) -> dict[str, Value]:
    """The user_realtime_seq row of a sequence (oldest first)."""
    return {
        "pin_ids": Value(int64_list_val=Int64List(val=[e.pin_id for e in seq])),
        "event_ts_ms": Value(int64_list_val=Int64List(val=[e.ts_ms for e in seq])),
        "actions": Value(
            string_list_val=StringList(val=[ENGAGEMENT_ACTIONS[e.action] for e in seq])
        ),
        "updated_ts_ms": Value(int64_val=updated_ms),
    }


# Value oneof tags (field << 3 | wire type): int64_val 4/varint, string_list_val 12/bytes,
# int64_list_val 14/bytes. Entries of a StringList: field 1, bytes.
INT64_TAG, STRING_LIST_TAG, INT64_LIST_TAG = b"\x20", b"\x62", b"\x72"
ACTION_ENTRIES = [b"\x0a" + bytes([len(a)]) + a.encode() for a in ENGAGEMENT_ACTIONS]


def _varint_loop(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Varints by 14-bit groups from two tables (~1.5 MB): the loop above costs ~1 µs for a pin
# id and ~1.5 µs for an epoch-ms time, and the worker writes several per event.
_SMALL = [_varint_loop(n) for n in range(1 << 14)]  # n < 2**14, whole
_GROUP = [bytes((n & 0x7F | 0x80, n >> 7 | 0x80)) for n in range(1 << 14)]  # 14 bits, more follow


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint of ``n >= 0``."""
    if n < 0x4000:
        if n < 0:  # a list index would take it from the end
            raise ValueError(f"varint of a negative number: {n}")
        return _SMALL[n]
    if n < 0x1000_0000:
        return _GROUP[n & 0x3FFF] + _SMALL[n >> 14]
    if n < 0x40_0000_0000:  # epoch milliseconds until 2109
        return _GROUP[n & 0x3FFF] + _GROUP[n >> 14 & 0x3FFF] + _SMALL[n >> 28]
    return _GROUP[n & 0x3FFF] + _GROUP[n >> 14 & 0x3FFF] + varint(n >> 28)


def int64_value_bytes(n: int) -> bytes:
    """A serialized ``Value(int64_val=n)`` (n >= 0)."""
    return INT64_TAG + varint(n)


def packed_int64(n: int) -> bytes:
    """A serialized one-value ``Int64List`` (``val=[n]``, packed), without the message."""
    if n < 0:  # protobuf writes a negative int64 as its 64-bit two's complement
        n += 1 << 64
    body = varint(n)
    return b"\x0a" + _SMALL[len(body)] + body


_NANOS = [b"\x10" + varint(m * 1_000_000) if m else b"" for m in range(1000)]


@functools.lru_cache(maxsize=4096)  # a batch's events share a few hundred seconds
def _seconds(seconds: int) -> bytes:
    return b"\x08" + varint(seconds) if seconds else b""


def timestamp_bytes(ms: int) -> bytes:
    """A serialized ``google.protobuf.Timestamp`` (seconds 1, nanos 2; zeros omitted)."""
    seconds, millis = divmod(ms, 1000)
    return _seconds(seconds) + _NANOS[millis]


def pin_values(state: Decayed) -> dict[str, Value]:
    """The pin_engagement row of a decayed state."""
    row = {name: Value(double_val=v) for name, v in zip(PIN_FEATURES, state.values, strict=False)}
    row["last_event_ts_ms"] = Value(int64_val=state.ref_ms)
    return row


@dataclass(frozen=True)
class ViewLayout(online_layout.ViewLayout):
    """One stream view as stored online, with the fast key of its single INT64 join key;
    ``features`` are ours (``VIEW_FEATURES``) that the view declares, in our order."""

    keys: EntityKeys


@dataclass(frozen=True)
class StoreLayout:
    kind: str  # "redis" | "sqlite"
    project: str
    user: ViewLayout
    pin: ViewLayout


def layout_of(store: feast.FeatureStore) -> StoreLayout:
    """Check the two views and the online store, and name everything the writers need."""
    kind = store.config.online_store.type
    if kind not in ("redis", "sqlite"):
        raise LayoutError(f"online store {kind!r} is not supported by the stream worker")
    _refuse_options(store)
    return StoreLayout(
        kind=kind,
        project=store.project,
        user=_view(store, USER_VIEW, "user_id", USER_FEATURES),
        pin=_view(store, PIN_VIEW, "pin_id", PIN_FEATURES),
    )


def _refuse_options(store: feast.FeatureStore) -> None:
    cfg = store.config.online_store
    extra = [
        name
        for name in ("vector_enabled", "enable_openai_compatible_store", "key_ttl_seconds")
        if getattr(cfg, name, None)
    ]
    if extra or getattr(cfg, "redis_type", "redis") != "redis":
        raise LayoutError(f"online store options not supported by the stream worker: {extra}")


def _view(store: feast.FeatureStore, name: str, join_key: str, wanted: tuple[str, ...]) -> ViewLayout:  # fmt: skip
    full = online_layout.view_layout(store, name)
    missing = [f for f in wanted if f not in full.features and f not in OPTIONAL_FEATURES]
    if missing or full.join_keys != (join_key,):
        raise LayoutError(f"view {name!r} lacks {missing} or is not keyed by {join_key!r}")
    features = tuple(f for f in wanted if f in full.features)
    # Writers slice their values to len(features): only trailing features may be missing.
    assert features == wanted[: len(features)], f"{name}: optional features must come last"
    ours = dataclasses.replace(full, features=features, redis_fields=tuple(map(full.redis_field, features)))  # fmt: skip
    fields = {f.name: getattr(ours, f.name) for f in dataclasses.fields(ours)}
    return ViewLayout(**fields, keys=EntityKeys(join_key, full.key_version))
