"""Where Feast 0.67 keeps a feature view's rows online (sampling: ``online_sample``).

Feast has no scan API, and its per-call machinery is too slow for a writer on the hot path,
so the stream worker writes, and the freshness monitor reads, Feast's storage directly.
This module is the one place that knows that storage; ``tests/core/test_online_layout.py``
pins it against what Feast's own ``online_write_batch`` writes.

- Entity key (serialization version 3): ``<I n>``, per join key in sorted order
  ``<I STRING><I len><name>``, then per value ``<I type><I len><bytes>`` (INT64: ``<q``).
- Redis: one hash per entity, key = entity key + project; fields ``mmh3("<view>:<feature>")``
  -> serialized ``Value`` and ``"_ts:<view>"`` -> ``google.protobuf.Timestamp``.
- SQLite: table ``<project>_<view>``, one row per (entity_key, feature_name) with the row's
  ``event_ts`` in whole seconds (``sqlite_ts_ms``): SQLite rows' event times are
  second-precise, Redis rows' millisecond-precise.
"""

import datetime as dt
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import feast
import redis
from feast.errors import FeastObjectNotFoundException
from feast.infra.key_encoding_utils import serialize_entity_key, serialize_entity_key_prefix
from feast.infra.online_stores.helpers import _mmh3, compute_table_id, compute_versioned_name
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value, ValueType
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp

from towerline.core.errors import InputError

KeyValue = int | str | bytes
_U32, _I64 = struct.Struct("<I"), struct.Struct("<q")
_DECODE = {
    ValueType.INT64: lambda b: _I64.unpack(b)[0],
    ValueType.INT32: lambda b: struct.unpack("<i", b)[0],
    ValueType.STRING: bytes.decode,
    ValueType.BYTES: bytes,
}
_ENCODE = {
    ValueType.INT64: _I64.pack,
    ValueType.INT32: struct.Struct("<i").pack,
    ValueType.STRING: str.encode,
    ValueType.BYTES: bytes,
}
_EPOCH = dt.datetime(1970, 1, 1)


class LayoutError(InputError):
    """The Feast repository or store does not look like what towerline reads and writes."""


# -- where the store is -------------------------------------------------------------------


def redis_client(store: feast.FeatureStore, timeout_s: float = 10.0) -> redis.Redis:
    """A client of the store's Redis, parsed the way Feast parses its connection string.

    Our own client (not Feast's) so that a dead Redis fails after ``timeout_s`` instead of
    hanging the caller.
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


def redis_address(client: redis.Redis) -> str:
    where = client.connection_pool.connection_kwargs
    return f"{where.get('host')}:{where.get('port')}"


# -- entity keys --------------------------------------------------------------------------


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
        return self.prefix + _I64.pack(entity_id)


def parse_entity_key(raw: bytes) -> tuple[dict[str, KeyValue], int]:
    """The join-key values of a serialized (version 3) entity key at the start of ``raw``,
    and where it ends; raises ``ValueError`` when ``raw`` does not start with one."""
    try:
        (n,), pos, names = _U32.unpack_from(raw), 4, []
        for _ in range(n):
            kind, length = struct.unpack_from("<II", raw, pos)
            if kind != ValueType.STRING:
                raise ValueError(f"join key name of type {kind}")
            names.append(raw[pos + 8 : pos + 8 + length].decode())
            pos += 8 + length
        values: dict[str, KeyValue] = {}
        for name in names:
            kind, length = struct.unpack_from("<II", raw, pos)
            chunk = raw[pos + 8 : pos + 8 + length]
            if len(chunk) != length:
                raise ValueError("truncated entity key")
            values[name] = _DECODE[kind](chunk)
            pos += 8 + length
    except (struct.error, KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a Feast entity key: {exc!r}") from None
    return values, pos


# -- a view's layout ----------------------------------------------------------------------


@dataclass(frozen=True)
class ViewLayout:
    """One feature view as stored online."""

    name: str  # versioned view name
    project: str
    join_keys: tuple[str, ...]  # in serialization (sorted) order
    key_types: tuple[int, ...]  # ValueType of each join key, same order
    features: tuple[str, ...]
    sqlite_table: str
    redis_ts_field: bytes
    redis_fields: tuple[bytes, ...]  # mmh3 field per feature, same order
    key_version: int  # entity key serialization version

    def redis_field(self, feature: str) -> bytes:
        return self.redis_fields[self.features.index(feature)]

    def entity_key(self, key: Mapping[str, KeyValue]) -> bytes:
        """Serialized entity key of ``key`` (join key -> value), as Feast serializes it."""
        if set(key) != set(self.join_keys):
            raise LayoutError(f"{self.name} is keyed by {list(self.join_keys)}, got {list(key)}")
        return self.key_prefix(key)

    def key_prefix(self, key: Mapping[str, KeyValue]) -> bytes:
        """The bytes every entity key starting with ``key``'s leading join keys starts with."""
        out = [serialize_entity_key_prefix(list(self.join_keys), self.key_version)]
        for name, kind in zip(self.join_keys, self.key_types, strict=True):
            if name not in key:
                break
            raw = _ENCODE[kind](key[name])
            out.append(struct.pack("<II", kind, len(raw)) + raw)
        return b"".join(out)


def view_layout(
    store: feast.FeatureStore, name: str, features: Sequence[str] | None = None
) -> ViewLayout:
    """The layout of view ``name`` (of ``features``, default all it declares, in its order)."""
    try:
        view = store.get_feature_view(name)
    except FeastObjectNotFoundException as exc:
        raise LayoutError(
            f"no feature view {name!r} in project {store.project!r}: run `towerline features apply`"
        ) from exc
    declared = [f.name for f in view.features]
    features = tuple(declared if features is None else features)
    unknown = [f for f in features if f not in declared]
    if unknown:
        raise LayoutError(f"view {name!r} has no features {unknown}")
    dtypes = {c.name: c.dtype.to_value_type().value for c in view.entity_columns}
    join_keys = tuple(sorted(view.join_keys)) if len(view.join_keys) > 1 else tuple(view.join_keys)
    unsupported = [k for k in join_keys if dtypes.get(k) not in _ENCODE]
    if unsupported:
        raise LayoutError(f"view {name!r}: join keys of unsupported types {unsupported}")
    versioning = store.config.registry.enable_online_feature_view_versioning
    versioned = compute_versioned_name(view, versioning)
    return ViewLayout(
        name=versioned,
        project=store.project,
        join_keys=join_keys,
        key_types=tuple(int(dtypes[k]) for k in join_keys),
        features=features,
        sqlite_table=compute_table_id(store.project, view, versioning),
        redis_ts_field=f"_ts:{versioned}".encode(),
        redis_fields=tuple(_mmh3(f"{versioned}:{f}") for f in features),
        key_version=store.config.entity_key_serialization_version,
    )


def redis_key(entity_key: bytes, project: str) -> bytes:
    """The Redis hash of an entity: its serialized key followed by the project."""
    return entity_key + project.encode()


def timestamp_ms(raw: bytes) -> int:
    """Epoch ms of a Redis row's ``_ts`` field (a serialized protobuf Timestamp)."""
    ts = Timestamp.FromString(raw)
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def sqlite_ts_ms(stored: int | str | bytes) -> int:
    """Epoch ms of a SQLite row's ``event_ts``, read the way Feast reads it.

    Feast registers a process-wide sqlite3 adapter that stores a datetime as
    ``int(naive_utc.timestamp())``: whole seconds (the milliseconds are lost), the naive UTC
    time taken as local time; its reader undoes that with ``fromtimestamp``. ISO text is what
    Python's own adapter writes in a process that never imported Feast's SQLite store.
    """
    if isinstance(stored, int):
        when = dt.datetime.fromtimestamp(stored)
    else:
        when = dt.datetime.fromisoformat(_str(stored))
        if when.tzinfo is not None:
            when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)


def decode_value(raw: bytes | None) -> Any:
    """A stored ``Value`` as Python (lists for array features); ``None`` when absent."""
    return None if raw is None else feast_value_type_to_python_type(Value.FromString(raw))


def _str(text: str | bytes) -> str:
    return text.decode() if isinstance(text, bytes) else text


def delete_project_keys(client: redis.Redis, project: str, page: int = 5000) -> int:
    """Delete every Redis key of a Feast ``project`` (Feast ends each key with it), a page
    of ``UNLINK`` at a time; the number deleted. For benches and tests that fill a project."""
    deleted, batch = 0, []
    for key in client.scan_iter(match=f"*{project}", count=page):
        batch.append(key)
        if len(batch) >= page:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted
