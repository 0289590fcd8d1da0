"""Notice a partition that holds fewer records than the state store has applied from it.

The applied offsets belong to the topic, not to the broker: a worker restarted against a
new broker, or a recreated topic (a restarted dev broker loses its data), finds stored
offsets beyond the partition's end. Sought there, it would wait for offsets the new log
reaches only much later and skip every record below them as already applied — silently.

The rule, chosen to have no false positives on Tansu (whose ListOffsets end is the base
offset of the last batch + 1, an undercount when that batch holds several records): on a
newly assigned partition with a stored applied offset A, the worker seeks to A itself,
not A + 1, and the broker's first answer must contain record A.

- records starting at A: fine (A is dropped, it was applied already);
- records starting below A: the broker moved us back (Kafka's out-of-range reset to the
  earliest offset): the log ends before A — a reset;
- no records and a fetch high watermark <= A: the log ends before A — a reset. The high
  watermark of a fetch *at* A can only undercount when record A is in the last batch,
  and then that fetch returns the batch, so this branch never sees it;
- records starting above A: A was deleted (retention, compaction), not a reset.

The ListOffsets end is never used. Measured on the dev broker: 309 records whose last
batch holds 300 give a ListOffsets end of 10 and a fetch high watermark of 309.

Only partitions whose fetch state is new are checked (their high watermark can come from
nothing but the fetch at A); partitions kept across a rebalance were being read already.
Not covered: a topic recreated under a running worker (it is noticed at the next
assignment, e.g. a restart).
"""

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from towerline.core.errors import RefusedError

log = logging.getLogger(__name__)

OK, RESET, GONE = "ok", "reset", "gone"


@dataclass(frozen=True)
class Behind:
    """A partition whose log ends (at ``end``, if the broker said) before its applied offset."""

    partition: int
    applied: int
    end: int | None


class TopicResetError(RefusedError):
    """The topic holds fewer records than were applied from it: recreated, or a new broker."""


def first_record_verdict(applied: int, first: int) -> str:
    """OK, RESET or GONE for the first offset a fetch at ``applied`` returned."""
    if first == applied:
        return OK
    return RESET if first < applied else GONE


def empty_fetch_is_reset(applied: int, highwater: int | None) -> bool:
    """True when a fetch at ``applied`` returned nothing and the log ends before it."""
    return highwater is not None and highwater <= applied


class OffsetProbe:
    """The partitions of one worker awaiting the broker's first answer at their applied offset."""

    def __init__(self) -> None:
        self._fresh: set[int] = set()  # assigned with a new fetch state, not sought yet
        self._pending: dict[int, int] = {}  # sought to its applied offset -> that offset

    def assigned(self, partitions: Collection[int], highwater: Callable[[int], int | None]) -> None:
        """Note the partitions whose fetch state is new (no high watermark seen yet)."""
        self._fresh.update(p for p in partitions if highwater(p) is None)

    def forget(self, partition: int) -> None:
        self._fresh.discard(partition)
        self._pending.pop(partition, None)

    def seek_offset(self, partition: int, applied: int) -> int:
        """Where to seek a partition with stored ``applied`` offset (>= 0): A to probe, else A + 1."""
        if partition in self._fresh or partition in self._pending:
            self._fresh.discard(partition)
            self._pending[partition] = applied
            return applied
        return applied + 1

    def nothing_applied(self, partition: int) -> None:
        """No stored offset: nothing to check on this partition."""
        self.forget(partition)

    def records(
        self, partition: int, batch: list[Any], highwater: Callable[[int], int | None]
    ) -> tuple[list[Any], Behind | None]:
        """The polled batch without the probed record, or the partition found behind."""
        applied = self._pending.get(partition) if self._pending else None
        if applied is None or not batch:
            return batch, None
        del self._pending[partition]
        first = batch[0].offset
        verdict = first_record_verdict(applied, first)
        if verdict == RESET:
            return [], Behind(partition, applied, highwater(partition))
        if verdict == GONE and first > applied + 1:
            log.warning(
                "partition %d: offsets %d..%d were deleted before they were applied "
                "(retention or compaction)", partition, applied + 1, first - 1,
            )  # fmt: skip
        return (batch[1:] if verdict == OK else batch), None

    def silent(self, highwater: Callable[[int], int | None]) -> dict[int, Behind]:
        """Probed partitions whose empty fetch says the log ends before the applied offset."""
        out = {}
        for partition, applied in self._pending.items():
            end = highwater(partition)
            if empty_fetch_is_reset(applied, end):
                out[partition] = Behind(partition, applied, end)
        return out


def reset_error(
    topic: str, behind: Mapping[int, Behind], namespace: str, how: str
) -> TopicResetError:
    """One message: what happened, per partition, and the two ways on."""
    parts = "; ".join(
        f"partition {b.partition}: applied up to offset {b.applied}, but the log ends "
        + ("before it" if b.end is None else f"at offset {b.end}")
        for b in sorted(behind.values(), key=lambda b: b.partition)
    )
    return TopicResetError(
        f"topic {topic!r} holds fewer records than the state namespace {namespace!r} "
        f"has applied from it ({parts}): the topic was recreated or the broker is new or "
        "lost its data (a restarted dev broker does), so every new record would be skipped "
        "as already applied. Start the worker with a new --state-namespace (its state "
        f"starts empty), or keep the state and count the topic from its start by deleting "
        f"its applied offsets ({how})."
    )
