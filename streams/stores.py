"""Open the state store that matches a Feast online store (Redis with Redis, else SQLite)."""

import feast

from streams.feast_layout import layout_of
from streams.state import StateStore
from streams.store_redis import RedisStateStore
from streams.store_sqlite import SqliteStateStore
from towerline.core.online_layout import redis_client, sqlite_path
from towerline.core.stream_progress import StateNames, state_namespace


def open_state_store(store: feast.FeatureStore, namespace: str, half_life_ms: float) -> StateStore:
    """The state store that matches the Feast online store: Redis with Redis, else SQLite.

    Living next to the online rows is what lets one transaction cover both. The Feast
    project is appended to ``namespace``: the state belongs to that project's rows. Where
    the state lives is named by ``towerline.core.stream_progress``, whose readers find it there.
    """
    layout = layout_of(store)
    names = StateNames(state_namespace(namespace, store.project))
    if layout.kind == "redis":
        return RedisStateStore(redis_client(store), layout, names, half_life_ms)
    return SqliteStateStore(sqlite_path(store), layout, names, half_life_ms)
