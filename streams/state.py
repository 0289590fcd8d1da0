"""The authoritative state store: what the worker has applied, and the state it produced.

One ``commit`` per batch writes, in ONE transaction: the new user sequences, the merged
pin counts, the Feast online rows of both, and the applied offset of every partition in
the batch, after checking that each partition's stored applied offset is still the one
the worker started from (compare-and-set). A worker that was killed before the commit
left nothing; one killed after it is resumed from the stored offsets (not from Kafka's
committed offsets), so no event is applied twice or lost. A worker that lost a partition
in a rebalance but still holds a batch of it fails the check and drops the batch.
"""

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

import feast

from streams.batch import BatchUpdate
from streams.decay import Decayed
from streams.feast_layout import layout_of, redis_client, sqlite_path
from streams.sequence import Seq

NO_OFFSET = -1  # a partition nothing was applied from yet


@dataclass(frozen=True)
class Conflict:
    """The compare-and-set failed: ``partition`` is at ``found``, not at ``expected``."""

    partition: int
    expected: int
    found: int


class StateStore(Protocol):
    """Redis (``RedisStateStore``) or SQLite (``SqliteStateStore``)."""

    def applied(self, topic: str, partitions: Collection[int]) -> dict[int, int]:
        """Applied offset per partition; ``NO_OFFSET`` when none."""
        ...

    def load_users(self, user_ids: Collection[int]) -> dict[int, Seq]:
        """Stored sequences of the users that have one."""
        ...

    def load_pins(self, pin_ids: Collection[int]) -> dict[int, Decayed]:
        """Stored decayed counts of the pins that have them."""
        ...

    def commit(self, topic: str, update: BatchUpdate) -> Conflict | None:
        """Apply ``update`` atomically; ``None`` on success. = ``apply(prepare(...))``."""
        ...

    def prepare(self, topic: str, update: BatchUpdate) -> object:
        """The CPU-bound part of ``commit`` (run it on the worker thread)."""
        ...

    def apply(self, prepared: object) -> Conflict | None:
        """The waiting part of ``commit`` (may run on another thread)."""
        ...

    def close(self) -> None: ...


def open_state_store(store: feast.FeatureStore, namespace: str, half_life_ms: float) -> StateStore:
    """The state store that matches the Feast online store: Redis with Redis, else SQLite.

    Living next to the online rows is what lets one transaction cover both. The Feast
    project is appended to ``namespace``: the state belongs to that project's rows.
    """
    from streams.store_redis import RedisStateStore
    from streams.store_sqlite import SqliteStateStore

    layout = layout_of(store)
    namespace = f"{namespace}:{store.project}"
    if layout.kind == "redis":
        return RedisStateStore(redis_client(store), layout, namespace, half_life_ms)
    return SqliteStateStore(sqlite_path(store), layout, namespace, half_life_ms)
