"""Whole-store row sampling of a feature view, in Feast 0.67's own online storage.

Feast has no scan API: the freshness monitor samples rows here (Redis ``SCAN`` in the
view's key shape, SQLite by key order), through the layout ``towerline.core.online_layout``
knows. Over a large store every caller says how many rows it looked at.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import feast
import redis

from towerline.core.errors import UnavailableError
from towerline.core.online_layout import (
    KeyValue,
    LayoutError,
    ViewLayout,
    decode_value,
    parse_entity_key,
    redis_client,
    redis_key,
    sqlite_path,
    sqlite_ts_ms,
    timestamp_ms,
    view_layout,
)

_GLOB = re.compile(rb"([*?\[\]\\])")


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
