"""The authoritative state store: what the worker has applied, and the state it produced.

One ``commit`` per batch writes, in ONE transaction: the new user sequences, the merged
pin counts, the Feast online rows of both, and the applied offset and progress (newest
event time, commit time; ``towerline.core.stream_progress``) of every partition in the
batch, after checking that each partition's stored applied offset is still the one
the worker started from (compare-and-set). A worker that was killed before the commit
left nothing; one killed after it is resumed from the stored offsets (not from Kafka's
committed offsets), so no event is applied twice or lost. A worker that lost a partition
in a rebalance but still holds a batch of it fails the check and drops the batch.
"""

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from streams.decay import Decayed
from streams.sequence import Seq
from streams.update import BatchUpdate
from towerline.core.stream_progress import NO_OFFSET

__all__ = ["NO_OFFSET", "Conflict", "StateStore"]


@dataclass(frozen=True)
class Conflict:
    """The compare-and-set failed: ``partition`` is at ``found``, not at ``expected``."""

    partition: int
    expected: int
    found: int


class StateStore(Protocol):
    """Redis (``RedisStateStore``) or SQLite (``SqliteStateStore``)."""

    address: str  # "redis host:port" or "sqlite <path>", for messages

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

    def offsets_reset_hint(self, topic: str, partitions: Collection[int]) -> str:
        """The command that deletes these partitions' applied offsets (for messages)."""
        ...

    def close(self) -> None: ...
