"""How far the stream worker got, per partition, readable from outside the worker.

The worker keeps its authoritative state next to the Feast online rows (Redis with Redis,
the online SQLite file with SQLite) and commits, in the same transaction as that state and
the rows, per partition: the applied offset, the newest event time applied (never moving
backwards) and the commit's wall time. A stopped worker leaves them as they were, so a
reader sees its lag grow. This module names where all of it lives (the worker and the
readers share these names) and reads the progress back.

Names (``ns`` = the worker's ``state_namespace`` + ``":"`` + the Feast project):
- Redis: hash ``{ns}:offsets`` ``"topic:partition" -> applied``; hash ``{ns}:progress``
  ``"topic:partition" -> "<newest event ms>:<commit ms>"`` (newest ``-1``: no event yet);
  the worker's own state in the Feast rows' hashes, field ``{ns}:seq`` of a user's row and
  ``{ns}:decay`` of a pin's; ``{ns}:layout`` the version of that layout (``STATE_LAYOUT``).
- SQLite: tables ``<ns>_offsets (tp, applied)``, ``<ns>_progress (tp, newest_event_ms,
  committed_ms)``, ``<ns>_users``, ``<ns>_pins``, ``ns`` with non-word characters as ``_``.
  A database written by a worker older than the progress table has offsets only.
"""

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import feast
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from towerline.core.errors import UnavailableError
from towerline.core.online_layout import redis_address, redis_client, sqlite_path

NO_OFFSET = -1  # a partition nothing was applied from yet
NO_EVENT = -1  # stored as the newest event time of a partition that applied no event yet
# Where a Redis state namespace keeps its sequences and counts. 2: fields of the Feast row
# hashes; 1 (no ``{ns}:layout`` key, before 2026-11-28): keys ``{ns}:u:<id>``, ``{ns}:p:<id>``.
STATE_LAYOUT = "2"


def state_namespace(namespace: str, project: str) -> str:
    """The worker's state namespace for one Feast project: the state belongs to its rows."""
    return f"{namespace}:{project}"


def partition_field(topic: str, partition: int) -> str:
    """The field (Redis) or key (SQLite ``tp``) of one partition."""
    return f"{topic}:{partition}"


@dataclass(frozen=True)
class StateNames:
    """Every key and table of one state namespace (``state_namespace``'s result)."""

    namespace: str

    @property
    def redis_offsets(self) -> str:
        return f"{self.namespace}:offsets"

    @property
    def redis_progress(self) -> str:
        return f"{self.namespace}:progress"

    @property
    def redis_user_field(self) -> str:
        """The field of a user's Feast row hash that holds the worker's sequence."""
        return f"{self.namespace}:seq"

    @property
    def redis_pin_field(self) -> str:
        """The field of a pin's Feast row hash that holds the worker's decayed counts."""
        return f"{self.namespace}:decay"

    @property
    def redis_layout(self) -> str:
        return f"{self.namespace}:layout"

    def sqlite_table(self, kind: str) -> str:
        """``kind`` in offsets, progress, users, pins; quoted for SQL."""
        prefix = re.sub(r"\W", "_", self.namespace)
        return f'"{prefix}_{kind}"'


def progress_value(newest_event_ms: int, committed_ms: int) -> str:
    """The Redis progress value (the worker's Lua script writes the same shape)."""
    return f"{newest_event_ms}:{committed_ms}"


@dataclass(frozen=True)
class PartitionProgress:
    """One partition's progress as the worker last committed it.

    ``applied`` is the offset of the last record applied (events and dead letters alike):
    the next record the worker reads is ``applied + 1``, so the lag by offsets is
    ``end - applied - 1``. ``newest_event_ms`` is the newest event time applied from the
    partition (``None`` before the first event or for a worker older than this record);
    ``committed_ms`` the wall time of the last commit that moved the partition.
    """

    topic: str
    partition: int
    applied: int
    newest_event_ms: int | None
    committed_ms: int | None


def read_progress(store: feast.FeatureStore, namespace: str, topic: str) -> list[PartitionProgress]:
    """The progress of every partition of ``topic`` the worker of ``namespace`` (its
    ``WorkerConfig.state_namespace``) applied anything from, by partition; [] when none.

    Reads the store the worker writes for ``store``'s online store and project. Raises
    ``UnavailableError`` when that store does not answer.
    """
    names = StateNames(state_namespace(namespace, store.project))
    if store.config.online_store.type == "redis":
        found = _read_redis(store, names, topic)
    else:
        found = _read_sqlite(sqlite_path(store), names, topic)
    return sorted(found, key=lambda p: p.partition)


def _read_redis(store: feast.FeatureStore, names: StateNames, topic: str) -> list[PartitionProgress]:  # fmt: skip
    client = redis_client(store, timeout_s=5.0)
    try:
        with client.pipeline(transaction=True) as pipe:  # one snapshot of both hashes
            pipe.hgetall(names.redis_offsets)
            pipe.hgetall(names.redis_progress)
            offsets, progress = pipe.execute()
    except redis.RedisError as exc:
        raise UnavailableError(
            f"cannot read stream progress from Redis at {redis_address(client)}: {exc}"
        ) from None
    finally:
        client.close()
    out = []
    for raw_field, applied in offsets.items():
        field = raw_field.decode()
        owner, _, partition = field.rpartition(":")
        if owner != topic:
            continue
        newest, committed = _split(progress.get(raw_field))
        out.append(PartitionProgress(topic, int(partition), int(applied), newest, committed))
    return out


def _split(value: bytes | None) -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    newest, _, committed = value.decode().partition(":")
    return (None if int(newest) == NO_EVENT else int(newest)), int(committed)


def _read_sqlite(path: str, names: StateNames, topic: str) -> list[PartitionProgress]:
    if not Path(path).is_file():
        return []
    try:
        conn = sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}  # fmt: skip
            offsets, progress = names.sqlite_table("offsets"), names.sqlite_table("progress")
            if offsets.strip('"') not in tables:
                return []
            if progress.strip('"') in tables:
                sql = (
                    f"SELECT o.tp, o.applied, p.newest_event_ms, p.committed_ms FROM {offsets} o"
                    f" LEFT JOIN {progress} p ON p.tp = o.tp WHERE o.tp LIKE ? ESCAPE '\\'"
                )
            else:  # written by a worker older than the progress table
                sql = f"SELECT tp, applied, NULL, NULL FROM {offsets} WHERE tp LIKE ? ESCAPE '\\'"
            pattern = re.sub(r"([%_\\])", r"\\\1", topic) + ":%"
            rows = conn.execute(sql, (pattern,)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise UnavailableError(f"cannot read stream progress from {path}: {exc}") from None
    return [
        PartitionProgress(
            topic,
            int(tp.rpartition(":")[2]),
            applied,
            None if newest is None or newest == NO_EVENT else newest,
            committed,
        )
        for tp, applied, newest, committed in rows
        if tp.rpartition(":")[0] == topic
    ]


def end_offsets(bootstrap: str, topic: str, timeout_s: float) -> dict[int, int]:
    """The broker's end offset (ListOffsets, latest) of every partition of ``topic``.

    The end offset is the offset the next record will get: the lag by offsets of a
    partition is ``end - applied - 1``. Caution: the dev broker (Tansu) answers the base
    offset of the partition's last record *batch* + 1, which undercounts whenever that
    batch holds several records (measured: 309 records whose last batch holds 300 gave an
    end of 10), so against it this lag is a lower bound and may even be negative; a real
    Kafka answers the exact end. ``high_watermarks`` is exact on both. No consumer group is
    joined. Raises ``UnavailableError`` when no broker answers within ``timeout_s`` or the
    topic does not exist.
    """
    with _consumer(bootstrap, timeout_s) as consumer:
        partitions = _partitions(consumer, bootstrap, topic)
        try:
            ends = consumer.end_offsets(partitions, int(timeout_s * 1000))
        except KafkaError as exc:
            raise UnavailableError(f"cannot read the end offsets of {topic!r} at {bootstrap}: {exc}") from None  # fmt: skip
    return {tp.partition: end for tp, end in sorted(ends.items())}


def high_watermarks(bootstrap: str, topic: str, timeout_s: float) -> dict[int, int]:
    """The end offset of every partition of ``topic`` as a fetch reports it: exact on Kafka
    and on the dev broker alike (``end_offsets`` undercounts on the latter).

    Costs one fetch per partition at the start of its last batch (``ListOffsets`` end - 1),
    whose records are dropped. Partitions that did not answer within ``timeout_s`` are left
    out; ``UnavailableError`` as ``end_offsets``.
    """
    deadline = time.monotonic() + timeout_s
    with _consumer(bootstrap, timeout_s) as consumer:
        partitions = _partitions(consumer, bootstrap, topic)
        try:
            listed = consumer.end_offsets(partitions, int(timeout_s * 1000))
            consumer.assign(partitions)
            for tp in partitions:
                consumer.seek(tp, max(0, listed[tp] - 1))
            ends: dict[int, int] = {}
            while len(ends) < len(partitions) and time.monotonic() < deadline:
                consumer.poll(timeout_ms=100, max_records=1)
                for tp in partitions:
                    high = consumer.highwater(tp)
                    if high is not None:
                        ends[tp.partition] = high
        except KafkaError as exc:
            raise UnavailableError(f"cannot read the end offsets of {topic!r} at {bootstrap}: {exc}") from None  # fmt: skip
    return dict(sorted(ends.items()))


@contextlib.contextmanager
def _consumer(bootstrap: str, timeout_s: float) -> Iterator[KafkaConsumer]:
    timeout_ms = int(timeout_s * 1000)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            client_id="towerline-progress",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=min(max(timeout_ms, 1000), 300_000),  # < connections_max_idle_ms
            fetch_max_wait_ms=50,  # the dev broker holds an empty fetch this long
        )
    except KafkaError as exc:
        raise UnavailableError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        yield consumer
    finally:
        consumer.close()


def _partitions(consumer: KafkaConsumer, bootstrap: str, topic: str) -> list[TopicPartition]:
    try:
        found = consumer.partitions_for_topic(topic)
    except KafkaError as exc:
        raise UnavailableError(f"cannot read the partitions of {topic!r} at {bootstrap}: {exc}") from None  # fmt: skip
    if not found:
        raise UnavailableError(f"topic {topic!r} does not exist on {bootstrap}")
    return [TopicPartition(topic, p) for p in sorted(found)]
