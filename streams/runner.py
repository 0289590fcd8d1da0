"""Run a stream worker: blocking (the CLI) or in a background thread (demo, bench, tests).

with run_worker_in_thread(cfg, feature_store) as worker:
    replay_partition(lake, day, cfg.bootstrap)
    worker.wait_applied(n_sent, timeout_s=120)
    print(worker.freshness_ms(), worker.pipeline_latency_ms())
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import feast

from streams.config import WorkerConfig
from streams.metrics import StreamMetrics
from streams.stores import open_state_store
from streams.worker import StreamWorker, WorkerStats
from towerline.core.contracts import HALF_LIFE_TAG, PIN_ENGAGEMENT
from towerline.core.featurestore import record_tag
from towerline.core.metrics import SampleHistogram

log = logging.getLogger(__name__)


@dataclass
class WorkerHandle:
    """A worker running in a thread, and what it has seen so far."""

    worker: StreamWorker
    thread: threading.Thread
    stop_event: threading.Event
    metrics_port: int | None
    errors: list[BaseException] = field(default_factory=list)

    @property
    def stats(self) -> WorkerStats:
        return self.worker.stats

    def freshness_ms(self, qs: Iterable[float] = (50, 90, 99)) -> dict[str, float | None]:
        """Percentiles of online write time − event time, in ms (``{"p50": …, "p99": …}``)."""
        return _ms(self.worker.metrics.freshness, qs)

    def pipeline_latency_ms(self, qs: Iterable[float] = (50, 90, 99)) -> dict[str, float | None]:
        """Percentiles of online write time − Kafka record timestamp, in ms.

        The one to print when replaying historical events: their event times are days
        old, so freshness measures the data, not the pipeline.
        """
        return _ms(self.worker.metrics.pipeline_latency, qs)

    def wait_assigned(self, timeout_s: float = 60.0) -> float | None:
        """Seconds until the worker holds partitions (its group join is done); None if it
        did not within ``timeout_s`` or died first."""
        started = time.monotonic()
        while not self.worker.assigned.wait(0.05):
            if time.monotonic() - started > timeout_s or not self.thread.is_alive():
                return None
        return time.monotonic() - started

    def wait_until(self, done: Callable[[WorkerStats], bool], timeout_s: float) -> bool:
        """Poll ``done(stats)`` until true (True) or timeout / worker death (False)."""
        deadline = time.monotonic() + timeout_s
        while not done(self.stats):
            if time.monotonic() > deadline or not self.thread.is_alive():
                return False
            time.sleep(0.02)
        return True

    def wait_applied(self, n: int, timeout_s: float = 60.0) -> bool:
        """Wait until ``n`` records were handled (applied, duplicate or dead-lettered)."""
        return self.wait_until(lambda s: s.applied + s.duplicates + s.dead_lettered >= n, timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout_s)


def _ms(hist: SampleHistogram, qs: Iterable[float]) -> dict[str, float | None]:
    return {k: None if v is None else v * 1000 for k, v in hist.percentiles(qs).items()}


def record_half_life(store: feast.FeatureStore, cfg: WorkerConfig) -> None:
    """Readers decay pin_engagement forward with the half-life the workers fold with."""
    record_tag(store, PIN_ENGAGEMENT, HALF_LIFE_TAG, repr(float(cfg.half_life_s)))


@contextlib.contextmanager
def running_worker(
    cfg: WorkerConfig, store: feast.FeatureStore, clock: Callable[[], float] = time.time
) -> Iterator[tuple[StreamWorker, int | None]]:
    """A worker with its state store and /metrics endpoint, closed on exit."""
    record_half_life(store, cfg)
    state = open_state_store(store, cfg.state_namespace, cfg.half_life_ms)
    metrics = StreamMetrics(clock)
    try:
        port = (
            None if cfg.metrics_port is None else metrics.serve(cfg.metrics_port, cfg.metrics_addr)
        )
        yield StreamWorker(cfg, state, clock=clock, metrics=metrics), port
    finally:
        metrics.close()
        state.close()


def run_worker(
    cfg: WorkerConfig,
    store: feast.FeatureStore,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
    on_start: Callable[[int | None], object] | None = None,
) -> WorkerStats:
    """Run in this thread until ``stop`` is set; ``on_start(metrics_port)`` once ready."""
    with running_worker(cfg, store, clock) as (worker, port):
        if on_start is not None:
            on_start(port)
        worker.run(stop)
        return worker.stats


@contextlib.contextmanager
def run_worker_in_thread(
    cfg: WorkerConfig, store: feast.FeatureStore, clock: Callable[[], float] = time.time
) -> Iterator[WorkerHandle]:
    """Start a worker thread for the ``with`` block; stop it (leaving the group) after."""
    with running_worker(cfg, store, clock) as (worker, port):
        stop = threading.Event()
        handle = WorkerHandle(worker, threading.Thread(), stop, port)

        def target() -> None:
            try:
                worker.run(stop)
            except BaseException as exc:  # reported to the caller through handle.errors
                handle.errors.append(exc)
                log.exception("stream worker died")

        handle.thread = threading.Thread(target=target, name=f"stream-{cfg.group_id}", daemon=True)
        handle.thread.start()
        try:
            yield handle
        finally:
            handle.stop()
