"""What a worker counts once a batch is in the state store: stats and metrics."""

from dataclasses import dataclass

import numpy as np

from streams.committer import Settled
from streams.metrics import StreamMetrics


@dataclass
class WorkerStats:
    """Running totals, readable from another thread (demo, bench, tests)."""

    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    conflicts: int = 0
    errors: int = 0


def account(metrics: StreamMetrics, stats: WorkerStats, topic: str, done: Settled) -> None:
    """Count a committed batch; stats last, because callers wait on them."""
    update = done.update
    counted = update.counted
    metrics.applied.inc(len(counted))
    metrics.duplicates.inc(update.duplicates)
    for r in done.rejected:
        metrics.dead_lettered.inc(1, r.code)
    metrics.batch_seconds.observe_many(np.array([done.seconds]))
    if counted:
        n = len(counted)
        event_ms = np.fromiter((e.ts_ms for e in counted), np.int64, n)
        metrics.freshness.observe_many((done.done_ms - event_ms) / 1000.0)
        record_ms = np.fromiter((e.record_ts_ms for e in counted), np.int64, n)
        record_ms = record_ms[record_ms >= 0]
        metrics.pipeline_latency.observe_many((done.done_ms - record_ms) / 1000.0)
        metrics.event_lag.update(topic, _last_per_partition(counted, len(update.offsets)))
    stats.batches += 1
    stats.applied += len(counted)
    stats.duplicates += update.duplicates
    stats.dead_lettered += len(done.rejected)


def _last_per_partition(counted: list, partitions: int) -> dict[int, int]:
    """Event time of the last applied event of each partition (walks back, stops early)."""
    last: dict[int, int] = {}
    for e in reversed(counted):  # offset order within a partition
        if e.partition not in last:
            last[e.partition] = e.ts_ms
            if len(last) == partitions:
                break
    return last
