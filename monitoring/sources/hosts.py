"""Other processes' /metrics: the version each serving host serves, and the stream
worker's freshness histogram (write time - event time of every applied event).

Scraped with a plain HTTP GET and parsed with prometheus_client's text parser.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

from monitoring.model import (
    HOST_UP,
    HOST_VERSION,
    PIPELINE_FRESHNESS_P50,
    PIPELINE_FRESHNESS_P99,
    SERVING,
    VERSION_SKEW,
    Measure,
)
from monitoring.sources.index import version_number
from towerline.core.contracts import PIN_ENGAGEMENT
from towerline.core.errors import UnavailableError

SERVED_VERSION = "towerline_serving_model_version_info"
STREAM_FRESHNESS = "towerline_stream_freshness_seconds"


def metrics_url(host: str) -> str:
    host = host.strip().rstrip("/")
    base = host if "://" in host else f"http://{host}"
    return base if base.endswith("/metrics") else f"{base}/metrics"


def scrape(host: str, timeout_s: float = 2.0) -> str:
    """The /metrics text of ``host`` (``host:port`` or a URL); ``UnavailableError`` if none."""
    url = metrics_url(host)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:  # noqa: S310 - http(s) only
            return answer.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnavailableError(f"cannot scrape {url}: {reason}") from None


def served_version(text: str) -> str | None:
    """The model version a serving host's /metrics says it serves (value 1), if any."""
    for family in text_string_to_metric_families(text):
        if family.name == SERVED_VERSION:
            for sample in family.samples:
                if sample.value == 1 and sample.labels.get("model_version"):
                    return sample.labels["model_version"]
    return None


def host_measures(answers: Mapping[str, str | None | Exception]) -> list[Measure]:
    """Per host: up and version served; across answering hosts: the version skew.

    ``answers``: host -> the version it serves, None when its /metrics names none, or the
    error that kept it from answering.
    """
    out, numbers = [], []
    for host, answer in answers.items():
        up = not isinstance(answer, Exception)
        out.append(Measure(SERVING, HOST_UP, 1.0 if up else 0.0, host=host, note="" if up else str(answer)))  # fmt: skip
        n = version_number(answer) if up else None
        if up:
            note = f"serves {answer}" if n is not None else "its /metrics names no version served"
            out.append(Measure(SERVING, HOST_VERSION, None if n is None else float(n), host=host, note=note))  # fmt: skip
        if n is not None:
            numbers.append(n)
    if answers:
        skew = float(max(numbers) - min(numbers)) if numbers else None
        note = f"{len(numbers)} of {len(answers)} hosts report a version"
        out.append(Measure(SERVING, VERSION_SKEW, skew, note=note, sample=len(numbers)))
    return out


def histogram_buckets(text: str, name: str = STREAM_FRESHNESS) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of histogram ``name``, summed over
    every label set (several workers' histograms add up bucket by bucket)."""
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                out[le] = out.get(le, 0.0) + sample.value
    return out


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile``: linear within the bucket holding rank q·n.
    None without observations; the highest finite bound when the rank is in +Inf."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank, lower, below = q * total, 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def worker_freshness_measures(texts: Sequence[str], sources: Iterable[str]) -> list[Measure]:
    """pin_engagement's pipeline freshness from the workers' histograms (its rows carry no
    write time). ``texts``: the /metrics of every worker that answered."""
    merged: dict[float, float] = {}
    for text in texts:
        for le, count in histogram_buckets(text).items():
            merged[le] = merged.get(le, 0.0) + count
    total = int(merged.get(math.inf, 0.0))
    where = ", ".join(sources)
    note = f"{total} events in the histograms of {where} (bucket interpolation)"
    return [
        Measure(
            PIN_ENGAGEMENT,
            name,
            histogram_quantile(q, merged),
            job="streams",
            note=note if total else f"no events observed by {where}",
            sample=total or None,
        )  # fmt: skip
        for name, q in ((PIPELINE_FRESHNESS_P50, 0.5), (PIPELINE_FRESHNESS_P99, 0.99))
    ]
