"""Prometheus collectors over plain Python state, for every towerline process's /metrics.

Custom collectors, not prometheus_client ``Counter``/``Gauge``/``Histogram``: importing
``feast.metrics`` (Feast does it lazily on reads and writes) sets
``PROMETHEUS_MULTIPROC_DIR``, which turns every prometheus_client metric of the process into
a file-backed value shared *by name*, so two workers or servers in one process (tests,
demo) would add up. ``SampleHistogram`` takes a batch of observations at once (one
``searchsorted``) and keeps recent samples for percentiles.
"""

import bisect
import itertools
import threading
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector


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


class LabeledHistogram(Collector):
    """A histogram with one label (e.g. a stage), observed one value at a time."""

    def __init__(self, name: str, doc: str, label: str, buckets: Sequence[float]) -> None:
        self.name, self.doc, self.label = name, doc, label
        # Plain lists and bisect: observed several times per served request, where numpy's
        # per-call overhead (and a fresh zeros array per setdefault) cost ~3% of the CPU.
        self.bounds = [float(b) for b in buckets]
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, label: str, value: float) -> None:
        slot = bisect.bisect_left(self.bounds, value)  # le semantics, as searchsorted "left"
        with self._lock:
            counts = self._counts.get(label)
            if counts is None:
                counts = self._counts[label] = [0] * (len(self.bounds) + 1)
            counts[slot] += 1
            self._sums[label] = self._sums.get(label, 0.0) + value

    def count(self, label: str) -> int:
        with self._lock:
            return sum(self._counts[label]) if label in self._counts else 0

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.doc, labels=[self.label])
        with self._lock:
            for label, counts in sorted(self._counts.items()):
                cumulative = list(itertools.accumulate(counts))
                buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative, strict=False)]  # fmt: skip
                buckets.append(("+Inf", int(cumulative[-1])))
                family.add_metric([label], buckets, sum_value=self._sums[label])
        yield family
