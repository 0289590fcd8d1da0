"""Where Feast 0.67 keeps a feature view's rows online, and whole-store row sampling.

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
import itertools
import re
import sqlite3
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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

from towerline.core.errors import InputError, UnavailableError

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
_GLOB = re.compile(rb"([*?\[\]\\])")


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


# -- sampling the whole store -------------------------------------------------------------


@dataclass(frozen=True)
class SampledRow:
    """One online row: its entity, its event time and the requested feature values."""

    key: dict[str, KeyValue]  # join key -> value
    event_ts_ms: int  # the row's event time (Feast's row timestamp)
    values: dict[str, Any] = field(default_factory=dict)  # feature -> Python value or None


@dataclass(frozen=True)
class RowSample:
    """Rows of one view found by a scan of the online store.

    ``scanned`` counts the entity keys the scan looked at (Redis: keys of the view's key
    shape, rows of other views sharing the entity included; SQLite: entities read).
    ``total`` is the number of the view's rows matching the filter in the whole store,
    when known: exact on SQLite, and on Redis only when the scan was exhaustive.
    ``exhaustive``: the scan saw every matching row, so ``rows`` is all of them.
    """

    view: str
    rows: list[SampledRow]
    scanned: int
    total: int | None
    exhaustive: bool


def sample_rows(
    store: feast.FeatureStore,
    view: str,
    limit: int,
    *,
    fields: Sequence[str] = (),
    entity_filter: Mapping[str, KeyValue] | None = None,
    scan_count: int = 1000,
) -> RowSample:
    """Up to ``limit`` rows of ``view`` (with ``entity_filter``'s join-key values, e.g.
    ``{"model_version": "v3"}``), with their event times and the ``fields`` asked for.

    Redis: ``SCAN`` (``COUNT scan_count``) matching the view's key shape and the project,
    in Redis's hash order (effectively random), one pipelined ``HMGET`` per page; stops once
    ``limit`` rows are found. SQLite: the first ``limit`` entities in key order (the
    little-endian ids spread them over the id space), with ``total`` from a count. Event
    times are Feast's row times: millisecond-precise on Redis, whole seconds on SQLite
    (``sqlite_ts_ms``). Raises ``UnavailableError`` when the store does not answer.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    layout = view_layout(store, view)
    where = dict(entity_filter or {})
    unknown = [f for f in fields if f not in layout.features]
    unknown += [k for k in where if k not in layout.join_keys]
    if unknown:
        raise LayoutError(f"view {view!r} has no feature or join key {unknown}")
    try:
        if store.config.online_store.type == "redis":
            return _sample_redis(store, layout, limit, tuple(fields), where, scan_count)
        return _sample_sqlite(store, layout, limit, tuple(fields), where)
    except (redis.RedisError, sqlite3.Error) as exc:
        raise _unavailable(store, view, exc) from None


def read_event_times(
    store: feast.FeatureStore, view: str, entity_keys: Sequence[Mapping[str, KeyValue]]
) -> list[int | None]:
    """The event time (epoch ms) of each entity's row of ``view``, ``None`` where it has
    none; in the order of ``entity_keys`` (each maps every join key of the view)."""
    layout = view_layout(store, view)
    raw = [layout.entity_key(k) for k in entity_keys]
    try:
        if store.config.online_store.type == "redis":
            return _times_redis(store, layout, raw)
        return _times_sqlite(store, layout, raw)
    except (redis.RedisError, sqlite3.Error) as exc:
        raise _unavailable(store, view, exc) from None


def _unavailable(store: feast.FeatureStore, view: str, exc: Exception) -> UnavailableError:
    online = store.config.online_store
    where = f"Redis at {online.connection_string.split(',')[0]}" if online.type == "redis" else sqlite_path(store)  # fmt: skip
    return UnavailableError(f"cannot read the online store ({where}) of {view!r}: {exc}")


def _sample_redis(
    store: feast.FeatureStore,
    layout: ViewLayout,
    limit: int,
    fields: tuple[str, ...],
    where: dict[str, KeyValue],
    scan_count: int,
) -> RowSample:
    project = layout.project.encode()
    pattern = _glob(layout.key_prefix(where)) + b"*" + _glob(project)
    wanted = [layout.redis_ts_field, *(layout.redis_field(f) for f in fields)]
    rows: list[SampledRow] = []
    seen: set[bytes] = set()  # SCAN may return a key twice while Redis rehashes
    scanned, cursor, client = 0, 0, redis_client(store)
    try:
        while True:
            cursor, keys = client.scan(cursor, match=pattern, count=scan_count)
            scanned += len(keys)
            mine = [(k, key) for k in keys if k not in seen and (key := _own(k, project, layout, where))]  # fmt: skip
            seen.update(k for k, _ in mine)
            if mine:
                with client.pipeline(transaction=False) as pipe:
                    for k, _ in mine:
                        pipe.hmget(k, wanted)
                    replies = pipe.execute()
                for (_, key), (ts, *values) in zip(mine, replies, strict=True):
                    if ts is not None:  # the entity has rows of other views only
                        decoded = dict(zip(fields, map(decode_value, values), strict=True))
                        rows.append(SampledRow(key, timestamp_ms(ts), decoded))
            if cursor == 0 or len(rows) >= limit:
                break
    finally:
        client.close()
    exhaustive = cursor == 0 and len(rows) <= limit
    return RowSample(layout.name, rows[:limit], scanned, len(rows) if exhaustive else None, exhaustive)  # fmt: skip


def _own(
    raw: bytes, project: bytes, layout: ViewLayout, where: dict[str, KeyValue]
) -> dict[str, KeyValue] | None:
    """The join keys of Redis key ``raw`` if it is an entity of this view and project."""
    if not raw.endswith(project):
        return None
    try:
        key, end = parse_entity_key(raw)
    except ValueError:
        return None
    if end != len(raw) - len(project) or tuple(key) != layout.join_keys:
        return None  # another project whose name ends like ours, or another key shape
    return key if all(key[k] == v for k, v in where.items()) else None


def _sample_sqlite(
    store: feast.FeatureStore,
    layout: ViewLayout,
    limit: int,
    fields: tuple[str, ...],
    where: dict[str, KeyValue],
) -> RowSample:
    conn = _open_sqlite(store, layout)
    if conn is None:
        return RowSample(layout.name, [], 0, 0, True)
    table, first = f'"{layout.sqlite_table}"', layout.features[0]
    low = layout.key_prefix(where)
    high = _after_prefix(low)
    # The filter's leading join keys are a key prefix: a range of the primary key index.
    by_prefix = all(k in layout.join_keys[: len(where)] for k in where)
    names = list(dict.fromkeys((first, *fields)))
    try:
        total = None
        if by_prefix:
            count = f"SELECT COUNT(*) FROM {table} WHERE entity_key >= ? AND entity_key < ? AND feature_name = ?"  # fmt: skip
            total = conn.execute(count, (low, high, first)).fetchone()[0]
        sql = (
            f"SELECT entity_key, feature_name, value, event_ts FROM {table}"
            f" WHERE entity_key >= ? AND entity_key < ? AND feature_name IN ({_marks(names)})"
            " ORDER BY entity_key"
        )
        rows, scanned, exhaustive = [], 0, True
        cursor = conn.execute(sql, (low, high, *names))
        for raw, group in itertools.groupby(cursor, key=lambda r: r[0]):
            if len(rows) >= limit:
                exhaustive = False
                break
            scanned += 1
            key, _ = parse_entity_key(raw)
            if any(key[k] != v for k, v in where.items()):
                continue
            found = {name: (value, ts) for _, name, value, ts in group}
            if first not in found:
                continue
            values = {f: decode_value(found.get(f, (None,))[0]) for f in fields}
            rows.append(SampledRow(key, sqlite_ts_ms(found[first][1]), values))
    finally:
        conn.close()
    if total is None and exhaustive:
        total = len(rows)
    return RowSample(layout.name, rows, scanned, total, exhaustive)


def _times_redis(store: feast.FeatureStore, layout: ViewLayout, keys: list[bytes]) -> list[int | None]:  # fmt: skip
    out: list[int | None] = []
    client = redis_client(store)
    try:
        for start in range(0, len(keys), 1000):
            with client.pipeline(transaction=False) as pipe:
                for k in keys[start : start + 1000]:
                    pipe.hget(redis_key(k, layout.project), layout.redis_ts_field)
                out += [None if ts is None else timestamp_ms(ts) for ts in pipe.execute()]
    finally:
        client.close()
    return out


def _times_sqlite(store: feast.FeatureStore, layout: ViewLayout, keys: list[bytes]) -> list[int | None]:  # fmt: skip
    conn = _open_sqlite(store, layout)
    if conn is None:
        return [None] * len(keys)
    found: dict[bytes, int] = {}
    try:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            sql = f'SELECT entity_key, event_ts FROM "{layout.sqlite_table}" WHERE feature_name = ? AND entity_key IN ({_marks(chunk)})'  # fmt: skip
            for raw, ts in conn.execute(sql, (layout.features[0], *chunk)):
                found[raw] = sqlite_ts_ms(ts)
    finally:
        conn.close()
    return [found.get(k) for k in keys]


def _open_sqlite(store: feast.FeatureStore, layout: ViewLayout) -> sqlite3.Connection | None:
    """A read-only connection, or None when the file or the view's table does not exist
    yet (nothing was ever written: an empty view, not an error)."""
    path = Path(sqlite_path(store))
    if not path.is_file():
        return None
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
    table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (layout.sqlite_table,)
    ).fetchone()
    if table is None:
        conn.close()
        return None
    return conn


def _after_prefix(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")  # never empty: an entity key starts with <I n>
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def _glob(raw: bytes) -> bytes:
    """``raw`` as a literal in a Redis glob pattern."""
    return _GLOB.sub(rb"\\\1", raw)


def _marks(items: Sequence) -> str:
    return ",".join("?" * len(items))
