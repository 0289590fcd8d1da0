"""`towerline freshness serve`: the latest collection as Prometheus gauges on /metrics.

A background thread re-collects every ``interval_s``; a scrape reads the latest snapshot
(it never waits for a collection). Its own registry and a custom collector, like every
towerline /metrics (``towerline.core.metrics`` says why).

- ``towerline_freshness_value{view,measure,job,partition,host}``: every measure taken
  (a measure that could not be taken is absent, never 0);
- ``towerline_slo_target{slo,view,measure}`` and ``towerline_slo_ok{slo,view,measure}``
  (1 holds, 0 breached, absent when unknown);
- ``towerline_freshness_source_up{source}``: 0 for each source the last collection could
  not reach; ``towerline_freshness_collected_timestamp_seconds`` and
  ``towerline_freshness_collect_seconds``: when and how long the last collection took.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitoring.model import BREACH, OK, Snapshot
from towerline.core.errors import InputError, TowerlineError

log = logging.getLogger(__name__)
DEFAULT_PORT = 9110  # never 9108: the stream worker's
VALUE, TARGET, SLO_OK = "towerline_freshness_value", "towerline_slo_target", "towerline_slo_ok"
LABELS = ("view", "measure", "job", "partition", "host")


def families(snapshot: Snapshot | None, collect_s: float | None = None) -> list[GaugeMetricFamily]:  # fmt: skip
    """The gauges of one snapshot (none but the empty families before the first one)."""
    value = GaugeMetricFamily(VALUE, "A freshness measure (unit in its measure label).", labels=list(LABELS))  # fmt: skip
    target = GaugeMetricFamily(TARGET, "The SLO's target, in its measure's unit.", labels=["slo", "view", "measure"])  # fmt: skip
    ok = GaugeMetricFamily(SLO_OK, "1: the SLO holds; 0: breached; absent: not measured.", labels=["slo", "view", "measure"])  # fmt: skip
    up = GaugeMetricFamily("towerline_freshness_source_up", "0: the last collection could not reach this source.", labels=["source"])  # fmt: skip
    when = GaugeMetricFamily("towerline_freshness_collected_timestamp_seconds", "When the latest collection was taken (Unix time).")  # fmt: skip
    took = GaugeMetricFamily("towerline_freshness_collect_seconds", "How long the latest collection took.")  # fmt: skip
    out = [value, target, ok, up, when, took]
    if snapshot is None:
        return out
    seen = set()
    for m in snapshot.measures:
        if m.value is not None and m.key not in seen:
            seen.add(m.key)
            value.add_metric(list(m.key), float(m.value))
    for r in snapshot.slos:
        labels = [r.slo, r.view, r.measure]
        target.add_metric(labels, float(r.target))
        if r.status in (OK, BREACH):
            ok.add_metric(labels, 1.0 if r.status == OK else 0.0)
    for source in snapshot.unreachable:
        up.add_metric([source], 0.0)
    when.add_metric([], snapshot.taken_at.timestamp())
    if collect_s is not None:
        took.add_metric([], collect_s)
    return out


class SnapshotCollector(Collector):
    """Holds the latest snapshot; Prometheus's registry calls ``collect`` on each scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: tuple[Snapshot, float] | None = None

    def update(self, snapshot: Snapshot, collect_s: float) -> None:
        with self._lock:
            self._latest = (snapshot, collect_s)

    @property
    def latest(self) -> Snapshot | None:
        with self._lock:
            return None if self._latest is None else self._latest[0]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            latest = self._latest
        yield from families(*(latest or (None, None)))


class Exporter:
    """/metrics on ``addr:port`` over a collector refreshed by a background thread."""

    def __init__(
        self,
        collect: Callable[[], Snapshot],
        interval_s: float = 15.0,
        on_snapshot: Callable[[Snapshot], object] | None = None,
    ) -> None:
        self._collect, self.interval_s, self._on_snapshot = collect, interval_s, on_snapshot
        self.collector = SnapshotCollector()
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = None
        self.collections = 0

    def refresh(self) -> Snapshot:
        started = time.monotonic()
        snapshot = self._collect()
        self.collector.update(snapshot, time.monotonic() - started)
        self.collections += 1
        if self._on_snapshot is not None:
            self._on_snapshot(snapshot)
        return snapshot

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except TowerlineError as exc:
                log.warning("freshness collection failed: %s", exc)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad collection
                # The last snapshot stays served; its collected timestamp shows it aging.
                log.exception("freshness collection failed")

    def start(self, port: int = DEFAULT_PORT, addr: str = "127.0.0.1") -> int:
        """Collect once, serve /metrics, start re-collecting; return the port."""
        self.refresh()
        try:
            self._server, _ = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise InputError(f"cannot serve /metrics on {addr}:{port}: {exc.strerror or exc}; pick a free --port") from None  # fmt: skip
        self._thread = threading.Thread(target=self._loop, name="freshness-collect", daemon=True)
        self._thread.start()
        return self._server.server_port

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
