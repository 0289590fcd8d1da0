"""Open the state store that matches a Feast online store (Redis with Redis, else SQLite)."""

import feast

from streams.feast_layout import layout_of, redis_client, sqlite_path
from streams.state import StateStore
from streams.store_redis import RedisStateStore
from streams.store_sqlite import SqliteStateStore


def open_state_store(store: feast.FeatureStore, namespace: str, half_life_ms: float) -> StateStore:
    """The state store that matches the Feast online store: Redis with Redis, else SQLite.

    Living next to the online rows is what lets one transaction cover both. The Feast
    project is appended to ``namespace``: the state belongs to that project's rows.
    """
    layout = layout_of(store)
    namespace = f"{namespace}:{store.project}"
    if layout.kind == "redis":
        return RedisStateStore(redis_client(store), layout, namespace, half_life_ms)
    return SqliteStateStore(sqlite_path(store), layout, namespace, half_life_ms)
