"""Replay one day of a lake event table to Kafka as Avro, in event-time order.

Rows are read with pyarrow and turned into Python values a record batch at a time
(no per-row pandas), encoded with ``AvroCodec`` in the Confluent wire format and keyed
by ``user_id`` so one user's events stay in order on one partition. Every record is
either acknowledged by the broker or counted as failed with its reason: a send error
that survives the producer's retries reaches the future's errback, never the floor.
"""

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from kafka import KafkaProducer
from kafka.errors import KafkaError

from schemas.codec import AvroCodec
from schemas.errors import SchemaError
from schemas.lake import read_partition
from towerline.core.errors import TowerlineError
from towerline.core.kafka import ProducerSettings

# Lake table -> Avro subject of its rows. The topic defaults to the table name.
SUBJECTS: dict[str, str] = {"engagements": "Engagement", "offsite_conversions": "OffsiteConversion"}
BATCH_ROWS = 10_000
REPLAY_PRODUCER = ProducerSettings(client_id="towerline-replay")


class ReplayError(TowerlineError):
    """The replay cannot start (unknown table, broker unreachable)."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did. ``failed`` > 0 means records were not delivered; see ``errors``."""

    sent: int
    failed: int
    seconds: float
    topic: str
    first_event_ts: datetime | None
    last_event_ts: datetime | None
    errors: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        """Acknowledged records per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class TokenBucket:
    """Allows ``rate`` events per second on average, bursts of at most ``burst``.

    The clock and sleep are injected so a test can drive it with a fake clock.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate / 20)  # ~50 ms of sends
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._last = clock()

    def acquire(self, n: float = 1.0) -> None:
        """Take ``n`` tokens, sleeping off any deficit.

        The deficit is slept in one call and repaid by the refill of the next call, rather
        than re-checked in a loop: a loop can spin forever on float rounding.
        """
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        if self._tokens < 0:
            self._sleep(-self._tokens / self.rate)


@dataclass
class _Deliveries:
    """Counts failed records, grouped by exception type.

    ``fail`` runs on the main thread (encode and send errors) and on the producer's I/O
    thread (errbacks), hence the lock.
    """

    failed: int = 0
    kinds: dict[str, list[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.failed += 1
            kind = self.kinds.setdefault(type(exc).__name__, [0, _reason(exc)])
            kind[0] += 1

    def reasons(self) -> tuple[str, ...]:
        """``"<Error> x<count>: <first message>"`` per kind of failure."""
        with self.lock:
            return tuple(f"{name} x{n}: {first}" for name, (n, first) in self.kinds.items())


def _reason(exc: BaseException) -> str:
    """What went wrong, in words: kafka-python's errors often say only their own name
    (``[Error 7] RequestTimedOutError``) and keep the explanation in ``description``."""
    text = str(exc).strip()
    if text and not text.endswith(type(exc).__name__):
        return text
    detail = getattr(exc, "description", None) or (exc.__cause__ and str(exc.__cause__))
    return f"{text}: {detail}" if detail else text or repr(exc)


def replay_partition(
    lake: Path,
    dt: str,
    bootstrap: str,
    *,
    table: str = "engagements",
    topic: str | None = None,
    rate: float | None = None,
    progress: bool = True,
    codec: AvroCodec | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    settings: ProducerSettings = REPLAY_PRODUCER,
    restamp: bool = False,
    wall_clock: Callable[[], float] = time.time,
) -> ReplayResult:
    """Send lake partition ``table/dt=<dt>`` to ``topic`` (default: ``table``), oldest first.

    ``rate`` caps records per second. ``restamp`` replays a past day as if it happened
    now: each record's ``event_ts`` becomes the ``wall_clock`` time it is sent (never
    earlier than the record before, so event-time order is kept), and event-time freshness
    downstream measures the pipeline rather than the age of the data. The result's
    ``first_event_ts``/``last_event_ts`` are the lake's times either way.

    Returns counts; ``failed`` counts rows that did not encode and sends the broker never
    acknowledged, and ``errors`` says why, one line per kind of failure. A partition whose
    files lack a column or hold one of the wrong type is a ``LakeError`` naming the file.
    """
    if table not in SUBJECTS:
        raise ReplayError(f"cannot replay table {table!r}; replayable: {sorted(SUBJECTS)}")
    started = clock()
    topic = topic or table
    rows = _read_rows(Path(lake), table, dt)
    bucket = TokenBucket(rate, clock=clock, sleep=sleep) if rate else None
    deliveries = _Deliveries()
    codec = codec or AvroCodec()
    before = _before_send(bucket, _Restamper(wall_clock) if restamp else None)
    producer = _producer(bootstrap, settings)
    try:
        with _Progress(rows.num_rows, topic, enabled=progress) as bar:
            for batch in rows.to_batches(max_chunksize=BATCH_ROWS):
                records = _encoded(batch, SUBJECTS[table], codec, deliveries, before)
                _send_batch(producer, topic, records, deliveries)
                bar.advance(batch.num_rows)
            # No timeout: delivery_timeout_ms bounds every batch, which then fails through
            # its errback, so after flush() each record was acknowledged or counted.
            producer.flush()
            producer.close()  # joins the I/O thread: every errback has run
            result = _result(rows, topic, deliveries, clock() - started)
            bar.finish(result)
    except BaseException:
        with contextlib.suppress(KafkaError):  # keep the original error, not the close's
            producer.close(timeout=0)
        raise
    return result


def _read_rows(lake: Path, table: str, dt: str) -> pa.Table:
    """The partition sorted by event time; a file that does not fit the table is refused
    by ``read_partition``, naming it, rather than as one encode failure per row."""
    return read_partition(lake, table, dt).sort_by([("event_ts", "ascending")])


def _before_send(
    bucket: TokenBucket | None, stamp: Callable[[dict[str, Any]], None] | None
) -> Callable[[dict[str, Any]], None] | None:
    """Per record, just before it is encoded and sent: wait for the rate, then restamp,
    so a restamped event time is the moment the record leaves, not when it was queued."""
    if bucket is None and stamp is None:
        return None

    def before(record: dict[str, Any]) -> None:
        if bucket is not None:
            bucket.acquire()
        if stamp is not None:
            stamp(record)

    return before


class _Restamper:
    """Event times of a replayed past day -> the wall-clock time of sending, in order."""

    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self._wall_clock = wall_clock
        self._last_ms = 0

    def __call__(self, record: dict[str, Any]) -> None:
        # max(): the wall clock may step back (NTP); event-time order must not.
        self._last_ms = max(self._last_ms, int(self._wall_clock() * 1000))
        record["event_ts"] = self._last_ms


def _producer(bootstrap: str, settings: ProducerSettings) -> KafkaProducer:
    _check_reachable(bootstrap)
    try:
        return KafkaProducer(**settings.kwargs(bootstrap))
    except KafkaError as exc:
        raise ReplayError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc


def _check_reachable(bootstrap: str, timeout_s: float = 5.0) -> None:
    """Fail with one line when no bootstrap server accepts a TCP connection, before
    kafka-python logs an ERROR per reconnect attempt for seconds."""
    reasons = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
            return
        except (OSError, ValueError) as exc:
            reasons.append(f"{server.strip()}: {getattr(exc, 'strerror', None) or exc}")
    raise ReplayError(f"cannot reach Kafka at {bootstrap} ({'; '.join(reasons)})")


def _send_batch(
    producer: KafkaProducer,
    topic: str,
    records: Iterator[tuple[bytes, bytes]],
    deliveries: _Deliveries,
) -> None:
    """Send encoded (key, value) records; failures are counted, never raised."""
    for key, value in records:
        try:
            future = producer.send(topic, value=value, key=key)
        except KafkaError as exc:  # e.g. metadata for the topic never arrived
            deliveries.fail(exc)
            continue
        # Only failures get a callback: a per-record success callback costs throughput,
        # and after flush() every handed record that did not fail was acknowledged.
        future.add_errback(deliveries.fail)


def _encoded(
    batch: pa.RecordBatch,
    subject: str,
    codec: AvroCodec,
    deliveries: _Deliveries,
    before: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, Avro value) per row; a row that does not encode is counted as failed.

    A generator: ``before(record)`` runs as each record is about to be sent, not
    batch-wise ahead (see ``_before_send``)."""
    columns = _columns(batch)
    names = list(columns)
    for values in zip(*columns.values(), strict=True):
        record = dict(zip(names, values, strict=True))
        if before is not None:
            before(record)
        try:
            value = codec.encode(subject, record)
        except SchemaError as exc:
            deliveries.fail(exc)
            continue
        yield str(record["user_id"]).encode(), value


def _columns(batch: pa.RecordBatch) -> dict[str, list[Any]]:
    """Column name -> Python values; timestamps as int epoch millis (what fastavro writes)."""
    out: dict[str, list[Any]] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        out[name] = column.to_pylist()
    return out


def _result(rows: pa.Table, topic: str, deliveries: _Deliveries, seconds: float) -> ReplayResult:
    with deliveries.lock:
        failed = deliveries.failed
    ts = rows.column("event_ts")
    return ReplayResult(
        sent=rows.num_rows - failed,  # every other row was acknowledged (see replay_partition)
        failed=failed,
        seconds=seconds,
        topic=topic,
        first_event_ts=ts[0].as_py() if rows.num_rows else None,
        last_event_ts=ts[-1].as_py() if rows.num_rows else None,
        errors=deliveries.reasons(),
    )


class _Progress:
    """A rich progress bar on stderr, or nothing when disabled (tests, pipes)."""

    def __init__(self, total: int, topic: str, *, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

            columns = (*Progress.get_default_columns(), MofNCompleteColumn(), TimeElapsedColumn())
            self._bar = Progress(*columns, console=Console(stderr=True))
            self._task = self._bar.add_task(f"replay → {topic}", total=total)

    def __enter__(self) -> "_Progress":
        if self._bar is not None:
            self._bar.start()
        return self

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def finish(self, result: ReplayResult) -> None:
        """Replace the description with the final count."""
        if self._bar is not None:
            done = f"{result.topic}: {result.sent:,} sent, {result.failed:,} failed"
            self._bar.update(self._task, description=done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
