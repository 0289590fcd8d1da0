"""Prometheus metrics of a stream worker, in its own registry, served on /metrics.

Every metric is a custom collector over plain Python state (``towerline.core.metrics``
says why). Per-record observations (freshness) arrive as numpy arrays once per batch:
``SampleHistogram`` bins a batch with one ``searchsorted`` (a Histogram ``observe`` per
event would cost ~1 µs each) and keeps recent samples for percentiles.
"""

import threading
from collections.abc import Callable, Iterable
from functools import partial

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.events import REASON_CODES
from towerline.core.errors import InputError
from towerline.core.metrics import Family, SampleHistogram

PREFIX = "towerline_stream"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


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
