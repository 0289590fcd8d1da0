"""Replay one day of a lake event table to Kafka as Avro, in event-time order.

Rows are read with pyarrow and turned into Python values a record batch at a time
(no per-row pandas), encoded with ``AvroCodec`` in the Confluent wire format and keyed
by ``user_id`` so one user's events stay in order on one partition. Every record is
either acknowledged by the broker or counted as failed with its reason: a send error
that survives the producer's retries reaches the future's errback, never the floor.
"""

import contextlib
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
            kind = self.kinds.setdefault(type(exc).__name__, [0, str(exc)])
            kind[0] += 1

    def reasons(self) -> tuple[str, ...]:
        """``"<Error> x<count>: <first message>"`` per kind of failure."""
        with self.lock:
            return tuple(f"{name} x{n}: {first}" for name, (n, first) in self.kinds.items())


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
) -> ReplayResult:
    """Send lake partition ``table/dt=<dt>`` to ``topic`` (default: ``table``), oldest first.

    ``rate`` caps records per second. Returns counts; ``failed`` counts rows that did not
    encode and sends the broker never acknowledged.
    """
    if table not in SUBJECTS:
        raise ReplayError(f"cannot replay table {table!r}; replayable: {sorted(SUBJECTS)}")
    started = clock()
    topic = topic or table
    rows = read_partition(Path(lake), table, dt).sort_by([("event_ts", "ascending")])
    bucket = TokenBucket(rate, clock=clock, sleep=sleep) if rate else None
    deliveries = _Deliveries()
    codec = codec or AvroCodec()
    producer = _producer(bootstrap, settings)
    try:
        with _Progress(rows.num_rows, topic, enabled=progress) as bar:
            for batch in rows.to_batches(max_chunksize=BATCH_ROWS):
                _send_batch(producer, topic, batch, SUBJECTS[table], codec, bucket, deliveries)
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


def _producer(bootstrap: str, settings: ProducerSettings) -> KafkaProducer:
    try:
        return KafkaProducer(**settings.kwargs(bootstrap))
    except KafkaError as exc:
        raise ReplayError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc


def _send_batch(
    producer: KafkaProducer,
    topic: str,
    batch: pa.RecordBatch,
    subject: str,
    codec: AvroCodec,
    bucket: TokenBucket | None,
    deliveries: _Deliveries,
) -> None:
    """Encode and send one record batch; failures are counted, never raised."""
    for key, value in _encoded(batch, subject, codec, deliveries):
        if bucket is not None:
            bucket.acquire()
        try:
            future = producer.send(topic, value=value, key=key)
        except KafkaError as exc:  # e.g. metadata for the topic never arrived
            deliveries.fail(exc)
            continue
        # Only failures get a callback: a per-record success callback costs throughput,
        # and after flush() every handed record that did not fail was acknowledged.
        future.add_errback(deliveries.fail)


def _encoded(
    batch: pa.RecordBatch, subject: str, codec: AvroCodec, deliveries: _Deliveries
) -> Iterator[tuple[bytes, bytes]]:
    """(key, Avro value) per row; a row that does not encode is counted as failed."""
    columns = _columns(batch)
    names = list(columns)
    for values in zip(*columns.values(), strict=True):
        record = dict(zip(names, values, strict=True))
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
