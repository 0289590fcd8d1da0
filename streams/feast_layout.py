"""Where Feast 0.67 keeps the two stream views online, so the state store can write them.

The worker writes Feast rows in the *same* transaction as its state and applied offsets
(one Lua script on Redis, one SQLite transaction), which is what keeps the online copy
exactly-once after a crash. That needs Feast's storage layout, and this module is the only
place that knows it; ``tests/streams/test_feast_layout.py`` pins it by comparing what we
write with what Feast's own ``online_write_batch`` writes, byte for byte, and reading it
back through ``get_online_features``.

- Redis: one hash per entity, key = serialized entity key + project; fields are
  ``mmh3("<view>:<feature>")`` → serialized ``Value`` and ``"_ts:<view>"`` → ``Timestamp``.
- SQLite: table ``<project>_<view>``, one row per (entity_key, feature_name).
"""

import functools
import struct
from dataclasses import dataclass

import feast
import redis
from feast.errors import FeastObjectNotFoundException
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, compute_table_id, compute_versioned_name
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Int64List, StringList, Value

from streams.decay import Decayed
from streams.sequence import Seq
from towerline.core.contracts import (
    ENGAGEMENT_ACTIONS,
    PIN_ENGAGEMENT,
    USER_REALTIME_SEQ,
    VIEW_FEATURES,
)
from towerline.core.errors import InputError

USER_VIEW, PIN_VIEW = USER_REALTIME_SEQ, PIN_ENGAGEMENT
USER_FEATURES, PIN_FEATURES = VIEW_FEATURES[USER_VIEW], VIEW_FEATURES[PIN_VIEW]
OPTIONAL_FEATURES = frozenset({"updated_ts_ms"})


class LayoutError(InputError):
    """The Feast repository or store does not look like what the stream worker writes."""


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


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE_BYTE[n]  # lengths of short rows: the common case
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def int64_value_bytes(n: int) -> bytes:
    """A serialized ``Value(int64_val=n)`` (n >= 0)."""
    return INT64_TAG + varint(n)


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


class EntityKeys:
    """Feast's serialized entity key of a single INT64 join key, without a proto per call.

    The bytes are a fixed prefix plus the little-endian id; derived from Feast's own
    ``serialize_entity_key`` and checked against it, so a format change fails loudly.
    """

    def __init__(self, join_key: str, version: int) -> None:
        self.join_key, self.version = join_key, version
        self.prefix = self.feast(0)[:-8]
        for probe in (0, 1, 2**40 + 7):
            if self.feast(probe) != self(probe):
                raise LayoutError(f"unexpected Feast entity key layout (version {version})")

    def proto(self, entity_id: int) -> EntityKey:
        return EntityKey(join_keys=[self.join_key], entity_values=[Value(int64_val=entity_id)])

    def feast(self, entity_id: int) -> bytes:
        return serialize_entity_key(self.proto(entity_id), self.version)

    def __call__(self, entity_id: int) -> bytes:
        return self.prefix + struct.pack("<q", entity_id)


@dataclass(frozen=True)
class ViewLayout:
    """One stream view as stored online."""

    name: str  # versioned view name
    features: tuple[str, ...]  # what this view declares of ours, in our order
    keys: EntityKeys
    sqlite_table: str
    redis_ts_field: bytes
    redis_fields: tuple[bytes, ...]  # mmh3 field per feature, same order


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
    version = store.config.entity_key_serialization_version
    return StoreLayout(
        kind=kind,
        project=store.project,
        user=_view(store, USER_VIEW, "user_id", USER_FEATURES, version),
        pin=_view(store, PIN_VIEW, "pin_id", PIN_FEATURES, version),
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


def _view(
    store: feast.FeatureStore, name: str, join_key: str, wanted: tuple[str, ...], version: int
) -> ViewLayout:
    try:
        view = store.get_feature_view(name)
    except FeastObjectNotFoundException as exc:
        raise LayoutError(
            f"no feature view {name!r} in project {store.project!r}: run `towerline features apply`"
        ) from exc
    declared = {f.name for f in view.features}
    missing = [f for f in wanted if f not in declared and f not in OPTIONAL_FEATURES]
    if missing or list(view.join_keys) != [join_key]:
        raise LayoutError(f"view {name!r} lacks {missing} or is not keyed by {join_key!r}")
    features = tuple(f for f in wanted if f in declared)
    # Writers slice their values to len(features): only trailing features may be missing.
    assert features == wanted[: len(features)], f"{name}: optional features must come last"
    versioned = compute_versioned_name(
        view, store.config.registry.enable_online_feature_view_versioning
    )
    return ViewLayout(
        name=versioned,
        features=features,
        keys=EntityKeys(join_key, version),
        sqlite_table=compute_table_id(
            store.project, view, store.config.registry.enable_online_feature_view_versioning
        ),
        redis_ts_field=f"_ts:{versioned}".encode(),
        redis_fields=tuple(_mmh3(f"{versioned}:{f}") for f in features),
    )


def redis_client(store: feast.FeatureStore, timeout_s: float = 10.0) -> redis.Redis:
    """A client of the store's Redis, parsed the way Feast parses its connection string.

    Our own client (not Feast's) so that a dead Redis fails a batch after ``timeout_s``
    instead of hanging the worker.
    """
    nodes, params = RedisOnlineStore._parse_connection_string(
        store.config.online_store.connection_string
    )
    return redis.Redis(
        host=nodes[0]["host"],
        port=int(nodes[0]["port"]),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        **params,
    )


def sqlite_path(store: feast.FeatureStore) -> str:
    """The SQLite online store file, resolved the way Feast resolves it."""
    return SqliteOnlineStore._get_db_path(store.config)
