"""Stream views: lag per partition by offsets (end offset vs applied offset) and by event
time (now - newest applied event time), read from outside the worker: the applied offsets
and their newest event time are stored with the stream state, so a stopped worker shows
a lag that keeps growing.

Both stream views are written by the same worker in one transaction, so each partition's
lag is reported for each of them (their SLOs may differ).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monitoring.model import DATA_AGE, LAG_EVENT_TIME, LAG_OFFSETS, Measure
from towerline.core.contracts import STREAM_VIEWS

UNDERCOUNT = "end offsets as the broker reports them; the dev broker (Tansu) undercounts them"


def lag_measures(
    progress: Sequence[object],
    ends: Mapping[int, int] | None,
    now_ms: int,
    *,
    job: str = "streams",
    broker_note: str = UNDERCOUNT,
    views: Sequence[str] = STREAM_VIEWS,
) -> list[Measure]:
    """``lag_offsets`` and ``lag_seconds`` per partition and stream view.

    ``progress``: ``PartitionProgress`` rows (``partition``, ``applied`` — the offset of the
    last applied record, -1 for none — and ``newest_event_ms``); ``ends``: partition -> end
    offset (the next offset the broker will write), None when the broker was not read.
    """
    by_partition = {int(p.partition): p for p in progress}
    partitions = sorted(set(by_partition) | set(ends or {}))
    out = []
    for part in partitions:
        row = by_partition.get(part)
        applied = getattr(row, "applied", -1) if row is not None else -1
        applied = -1 if applied is None else int(applied)
        newest = getattr(row, "newest_event_ms", None) if row is not None else None
        if ends is None:
            offsets, note = None, "broker not read"
        elif part not in ends:
            offsets, note = None, "the broker did not report this partition"
        else:
            offsets, note = float(max(0, ends[part] - (applied + 1))), broker_note
        if newest is None:
            event_lag, why = None, "no event applied from this partition yet"
        else:
            event_lag, why = max(0.0, (now_ms - int(newest)) / 1000), f"applied up to offset {applied}"  # fmt: skip
        for view in views:
            out.append(Measure(view, LAG_OFFSETS, offsets, job=job, partition=str(part), note=note))  # fmt: skip
            out.append(Measure(view, LAG_EVENT_TIME, event_lag, job=job, partition=str(part), note=why))  # fmt: skip
    return out


def data_age_from_progress(progress: Sequence[object], now_ms: int, *, job: str = "streams", views: Sequence[str] = STREAM_VIEWS) -> list[Measure]:  # fmt: skip
    """now - the newest event time applied on any partition (exact: from the stream state)."""
    newest = [int(p.newest_event_ms) for p in progress if getattr(p, "newest_event_ms", None) is not None]  # fmt: skip
    if not newest:
        return [Measure(v, DATA_AGE, None, job=job, note="no event applied yet (stream state)") for v in views]  # fmt: skip
    age = max(0.0, (now_ms - max(newest)) / 1000)
    return [Measure(v, DATA_AGE, age, job=job, note=f"newest applied event over {len(newest)} partitions (stream state)") for v in views]  # fmt: skip
