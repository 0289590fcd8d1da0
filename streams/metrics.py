"""Prometheus metrics of a stream worker, in its own registry, served on /metrics.

Every metric is a custom collector over plain Python state, not a prometheus_client
``Counter``/``Gauge``/``Histogram``: importing ``feast.metrics`` (Feast does it lazily on
reads and writes) sets ``PROMETHEUS_MULTIPROC_DIR``, which turns every prometheus_client
metric of the process into a file-backed value shared *by name*, so two workers in one
process (tests, demo) would add up. Per-record observations (freshness) arrive as numpy
arrays once per batch: ``SampleHistogram`` bins a batch with one ``searchsorted`` (a
Histogram ``observe`` per event would cost ~1 µs each) and keeps recent samples for
percentiles.
"""

import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from streams.events import REASON_CODES
from towerline.core.errors import InputError

PREFIX = "towerline_stream"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Family(Collector):
    """A counter or gauge family: one float per label-value tuple."""

    def __init__(self, kind: str, name: str, doc: str, labels: Sequence[str] = ()) -> None:
        self.kind, self.name, self.doc, self.labels = kind, name, doc, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def set(self, value: float, *labels: str) -> None:
        with self._lock:
            self._values[labels] = value

    def get(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def remove(self, *labels: str) -> None:
        with self._lock:
            self._values.pop(labels, None)

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = cls(self.name, self.doc, labels=self.labels)
        with self._lock:
            for labels, value in sorted(self._values.items()):
                family.add_metric(list(labels), value)
        yield family


class SampleHistogram(Collector):
    """A histogram fed a batch at a time, plus the last ``keep`` samples for percentiles."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float], keep: int = 200_000) -> None:
        self.name, self.doc = name, doc
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # last bin is +Inf
        self.total = 0.0
        self._ring = np.empty(keep, dtype=np.float64)
        self._filled, self._next = 0, 0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        bins = np.searchsorted(self.bounds, values, side="left")  # le semantics
        with self._lock:
            self.counts += np.bincount(bins, minlength=self.counts.size)
            self.total += float(values.sum())
            self._remember(values[-self._ring.size :])

    def _remember(self, values: np.ndarray) -> None:
        n, size = values.size, self._ring.size
        end = self._next + n
        if end <= size:
            self._ring[self._next : end] = values
        else:
            split = size - self._next
            self._ring[self._next :] = values[:split]
            self._ring[: n - split] = values[split:]
        self._next = end % size
        self._filled = min(size, self._filled + n)

    def percentiles(self, qs: Iterable[float] = (50, 90, 99)) -> dict[str, float | None]:
        """``{"p50": seconds, ...}`` over the retained samples; ``None`` before any."""
        qs = list(qs)
        with self._lock:
            samples = self._ring[: self._filled].copy()
        if samples.size == 0:
            return {f"p{q:g}": None for q in qs}
        return {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(samples, qs), strict=True)}

    def sample_count(self) -> int:
        with self._lock:
            return int(self.counts.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self.counts)
            total = self.total
        buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative, strict=False)]
        buckets.append(("+Inf", int(cumulative[-1])))
        yield HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=total)


class EventTimeLag(Collector):
    """now − event_ts of the last applied record, per partition, computed at scrape time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last_ms: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def update(self, topic: str, last_ms: dict[int, int]) -> None:
        with self._lock:
            for partition, ms in last_ms.items():
                self._last_ms[(topic, partition)] = ms

    def forget(self, topic: str, partition: int) -> None:
        with self._lock:
            self._last_ms.pop((topic, partition), None)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{PREFIX}_event_time_lag_seconds",
            "Now minus the event time of the last applied record, per partition.",
            labels=["topic", "partition"],
        )
        now_ms = self._clock() * 1000
        with self._lock:
            for (topic, partition), ms in sorted(self._last_ms.items()):
                family.add_metric([topic, str(partition)], (now_ms - ms) / 1000)
        yield family


class StreamMetrics:
    """Every metric of one worker, registered in ``self.registry``."""

    def __init__(self, clock: Callable[[], float], registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        counter, gauge = partial(Family, "counter"), partial(Family, "gauge")
        self.consumed = counter(f"{PREFIX}_records_consumed", "Records polled.")
        self.applied = counter(f"{PREFIX}_records_applied", "Events applied to the state.")
        self.duplicates = counter(f"{PREFIX}_records_duplicate", "Events ignored: event_id already seen.")  # fmt: skip
        self.already_applied = counter(f"{PREFIX}_records_already_applied", "Records at or below the applied offset, skipped.")  # fmt: skip
        self.dead_lettered = counter(f"{PREFIX}_records_dead_lettered", "Records sent to the dead-letter topic.", ["reason"])  # fmt: skip
        for code in REASON_CODES:
            self.dead_lettered.inc(0, code)
        self.conflicts = counter(f"{PREFIX}_commit_conflicts", "Batches dropped: a partition's applied offset moved under us.")  # fmt: skip
        self.errors = counter(f"{PREFIX}_batch_errors", "Batches that failed and will be retried, by error type.", ["error"])  # fmt: skip
        self.store_unavailable = counter(f"{PREFIX}_state_store_unavailable", "Failed calls to the state store (Redis or SQLite); each is retried after a growing backoff.")  # fmt: skip
        self.store_up = gauge(f"{PREFIX}_state_store_up", "1 if the last call to the state store succeeded, else 0.")  # fmt: skip
        self.store_up.set(1)
        self.batch_seconds = SampleHistogram(f"{PREFIX}_batch_seconds", "Poll-to-commit time of a batch.", BATCH_BUCKETS, keep=10_000)  # fmt: skip
        self.lag_records = gauge(f"{PREFIX}_consumer_lag_records", "High watermark minus next offset to apply (Tansu under-reports the watermark).", ["topic", "partition"])  # fmt: skip
        self.event_lag = EventTimeLag(clock)
        self.freshness = SampleHistogram(f"{PREFIX}_freshness_seconds", "Online write time minus event time, per applied event.", LATENCY_BUCKETS)  # fmt: skip
        self.pipeline_latency = SampleHistogram(f"{PREFIX}_pipeline_latency_seconds", "Online write time minus Kafka record timestamp, per applied event.", LATENCY_BUCKETS)  # fmt: skip
        for collector in (
            self.consumed, self.applied, self.duplicates, self.already_applied,
            self.dead_lettered, self.conflicts, self.errors, self.store_unavailable,
            self.store_up, self.batch_seconds,
            self.lag_records, self.event_lag, self.freshness, self.pipeline_latency,
        ):  # fmt: skip
            self.registry.register(collector)
        self._server = None

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start /metrics on ``addr:port`` (0: any free port); return the port."""
        try:
            self._server, _ = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:  # in use (often another worker's default port), or bad address
            raise InputError(
                f"cannot serve /metrics on {addr}:{port}: {exc.strerror or exc}. "
                "Pick a free --metrics-port (0: any free port, -1: no endpoint)."
            ) from None
        return self._server.server_port

    def forget_partition(self, topic: str, partition: int) -> None:
        """A revoked partition is another worker's to report."""
        self.event_lag.forget(topic, partition)
        self.lag_records.remove(topic, str(partition))

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
