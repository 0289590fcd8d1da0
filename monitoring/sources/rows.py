"""Measures over a sample of a view's online rows: row age percentiles (and the ages
themselves, for the report's histograms), the stream pipeline's freshness from
``user_realtime_seq``'s write time, and the share of active users with a history state.

Feast has no scan API: rows come from ``towerline.core.online_sample.sample_rows``, which
reads Feast's own storage; over a large store it samples, and every measure here says
how many rows it saw of how many.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitoring.model import (
    DATA_AGE,
    PIPELINE_FRESHNESS_P50,
    PIPELINE_FRESHNESS_P99,
    ROW_AGE_P50,
    ROW_AGE_P99,
    Measure,
)
from towerline.core.contracts import STREAM_VIEWS, USER_REALTIME_SEQ
from towerline.core.ledger import JOB_VIEWS

_WRITER = {v: job for job, views in JOB_VIEWS.items() for v in views}


@dataclass(frozen=True)
class Rows:
    """What a sample of one view's online rows says, reduced to numbers."""

    view: str
    event_ms: tuple[int, ...]  # each sampled row's event time (Feast's row timestamp)
    total: int | None  # rows of the view in the store (None: unknown)
    exhaustive: bool  # every row was read
    updated_ms: tuple[int, ...] = ()  # user_realtime_seq: write time, per row that has one
    newest_event_ms: tuple[int, ...] = ()  # user_realtime_seq: newest event of the same rows
    scanned: int | None = None  # keys the scan looked at (Redis: when it could not count)

    def sample_note(self) -> str:
        n = len(self.event_ms)
        if self.exhaustive:
            return f"all {n} rows"
        if self.total is not None:
            return f"sample {n} of {self.total} rows"
        return f"sample {n} rows, more not counted (counting is too slow; {self.scanned or n} keys scanned)"


def job_of(view: str) -> str:
    return "streams" if view in STREAM_VIEWS else _WRITER.get(view, "")


def ages_s(rows: Rows, now_ms: int) -> tuple[float, ...]:
    """now - event time of every sampled row, seconds (negative clock skew shows as 0)."""
    return tuple(max(0.0, (now_ms - t) / 1000) for t in rows.event_ms)


def row_age_measures(rows: Rows, now_ms: int) -> list[Measure]:
    ages = ages_s(rows, now_ms)
    note, n, job = rows.sample_note(), len(ages), job_of(rows.view)
    if not ages:
        return [Measure(rows.view, m, None, job=job, note=f"no rows online ({note})", sample=0) for m in (ROW_AGE_P50, ROW_AGE_P99)]  # fmt: skip
    p50, p99 = np.percentile(np.asarray(ages), [50, 99])
    return [
        Measure(rows.view, ROW_AGE_P50, float(p50), job=job, note=note, sample=n),
        Measure(rows.view, ROW_AGE_P99, float(p99), job=job, note=note, sample=n),
    ]


def pipeline_freshness_measures(rows: Rows) -> list[Measure]:
    """user_realtime_seq: write time - newest event time of each sampled row."""
    lags = [max(0.0, (u - e) / 1000) for u, e in zip(rows.updated_ms, rows.newest_event_ms, strict=True)]  # fmt: skip
    note = rows.sample_note() if len(lags) == len(rows.event_ms) else f"{rows.sample_note()}; {len(lags)} with a write time"  # fmt: skip
    if not lags:
        return [Measure(USER_REALTIME_SEQ, m, None, job="streams", note=f"no row with a write time ({rows.sample_note()})", sample=0) for m in (PIPELINE_FRESHNESS_P50, PIPELINE_FRESHNESS_P99)]  # fmt: skip
    p50, p99 = np.percentile(np.asarray(lags), [50, 99])
    return [
        Measure(
            USER_REALTIME_SEQ,
            PIPELINE_FRESHNESS_P50,
            float(p50),
            job="streams",
            note=note,
            sample=len(lags),
        ),  # fmt: skip
        Measure(
            USER_REALTIME_SEQ,
            PIPELINE_FRESHNESS_P99,
            float(p99),
            job="streams",
            note=note,
            sample=len(lags),
        ),  # fmt: skip
    ]


def data_age_from_rows(rows: Rows, now_ms: int) -> Measure:
    """now - the newest event time among the sampled rows (a lower bound when sampled)."""
    if not rows.event_ms:
        return Measure(rows.view, DATA_AGE, None, job="streams", note=f"no rows online ({rows.sample_note()})", sample=0)  # fmt: skip
    age = max(0.0, (now_ms - max(rows.event_ms)) / 1000)
    return Measure(rows.view, DATA_AGE, age, job="streams", note=rows.sample_note(), sample=len(rows.event_ms))  # fmt: skip


def spread(values: Sequence[int], n: int) -> list[int]:
    """Up to ``n`` of ``values`` spread evenly over them (a deterministic sample)."""
    if len(values) <= n:
        return list(values)
    picks = np.unique(np.linspace(0, len(values) - 1, n).astype(int))
    return [values[i] for i in picks]
