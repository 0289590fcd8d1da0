"""Prometheus metrics of one serving process (its own registry; see towerline.core.metrics)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from functools import partial

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from towerline.core.metrics import Family, LabeledHistogram

PREFIX = "towerline_serving"
SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServedGauges(Collector):
    """The version served (value 1, labelled) and the index age, computed at scrape time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.current: tuple[str, str, str] | None = None  # model_name, version, built_at

    def collect(self) -> Iterable[GaugeMetricFamily]:
        version = GaugeMetricFamily(
            f"{PREFIX}_model_version_info",
            "The model version this process serves (1 for the version served).",
            labels=["model_name", "model_version"],
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_index_age_seconds", "Now minus the build time of the index served."
        )
        if self.current is not None:
            name, model_version, built_at = self.current
            version.add_metric([name, model_version], 1.0)
            built = dt.datetime.fromisoformat(built_at).timestamp()
            age.add_metric([], self._clock() - built)
        yield version
        yield age


class ServingMetrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        counter = partial(Family, "counter")
        self.requests = counter(f"{PREFIX}_requests", "Requests by endpoint and outcome.", ["endpoint", "outcome"])  # fmt: skip
        self.swaps = counter(f"{PREFIX}_version_swaps", "Times a newly published version was loaded and swapped in.")  # fmt: skip
        self.refused = counter(f"{PREFIX}_versions_refused", "Published versions refused because they did not verify.")  # fmt: skip
        self.latency = LabeledHistogram(f"{PREFIX}_request_seconds", "Request latency by endpoint.", "endpoint", SECONDS)  # fmt: skip
        self.stages = LabeledHistogram(f"{PREFIX}_stage_seconds", "Time per micro-batch in each stage: features, tower, ann, filters.", "stage", SECONDS)  # fmt: skip
        self.batch_sizes = LabeledHistogram(f"{PREFIX}_batch_size", "Requests per micro-batch.", "endpoint", SIZES)  # fmt: skip
        self.served = ServedGauges(clock)
        for collector in (self.requests, self.swaps, self.refused, self.latency, self.stages, self.batch_sizes, self.served):  # fmt: skip
            self.registry.register(collector)
