"""Batch views: how old is the last successful run that wrote each one (the run ledger),
and whether the served model version has history states for the newest day.

A failed run never makes a view fresh: the age is that of the last *success*, and a newer
failure is said in the note. A view no run ever wrote is infinitely old (``math.inf``, a
Prometheus ``+Inf``): that breaches every run-age SLO and fires its alert, where "not
measured" would stay silent.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from monitoring.model import RUN_AGE, SERVED_HAS_LATEST, STATES_COVERAGE, Measure
from schemas.lake import partition_dir, partitions
from towerline.core import ledger
from towerline.core.contracts import BATCH_VIEWS, USER_HISTORY_STATE

# The job whose success makes each batch view fresh (the inverse of the ledger's JOB_VIEWS).
WRITER: dict[str, str] = {v: job for job, views in ledger.JOB_VIEWS.items() for v in views}


def run_age_measures(
    records: Sequence[ledger.RunRecord], now: dt.datetime, views: Iterable[str] = BATCH_VIEWS
) -> list[Measure]:
    """One ``run_age_seconds`` per view: now minus the end of its last successful run."""
    out = []
    for view in views:
        ok = ledger.last(records, view=view)
        newest = ledger.last(records, view=view, outcome=None)
        job = ok.job if ok else WRITER.get(view, "")
        failed = newest if newest is not None and newest.outcome != ledger.SUCCESS else None
        notes = []
        if ok is None:
            notes.append("no successful run in the ledger")
        else:
            day = f" for {ok.partition.isoformat()}" if ok.partition else ""
            notes.append(f"last success {ok.finished_at:%Y-%m-%d %H:%M} UTC{day}")
        if failed is not None:
            why = f": {failed.error}" if failed.error else ""
            notes.append(f"newer run {failed.outcome} at {failed.finished_at:%Y-%m-%d %H:%M}{why}")
        value = math.inf if ok is None else max(0.0, (now - ok.finished_at).total_seconds())
        out.append(Measure(view, RUN_AGE, value, job=job, note="; ".join(notes)))
    return out


def latest_partition_measure(lake: Path, served: str | None) -> Measure:
    """1 when the served version has states under the newest ``user_history_state`` day."""
    days = partitions(lake, USER_HISTORY_STATE)
    if served is None:
        return _no_states("no served version (no serving.json)")
    if not days:
        return _no_states(f"no {USER_HISTORY_STATE} partitions in {lake}")
    latest = days[-1]
    folder = partition_dir(lake, USER_HISTORY_STATE, latest) / served
    has = folder.is_dir() and any(folder.glob("*.parquet"))
    note = f"latest partition dt={latest.isoformat()}; served {served}"
    return Measure(USER_HISTORY_STATE, SERVED_HAS_LATEST, 1.0 if has else 0.0, job="batch encode", note=note)  # fmt: skip


def _no_states(why: str) -> Measure:
    return Measure(USER_HISTORY_STATE, SERVED_HAS_LATEST, None, job="batch encode", note=why)


def coverage_measure(found: int, sampled: int, population: int | None, source: str) -> Measure:
    """Share of ``sampled`` active users with a history state row of the served version."""
    of = f" of {population}" if population is not None else ""
    note = f"sample {sampled}{of} active users ({source})"
    if sampled == 0:
        return Measure(USER_HISTORY_STATE, STATES_COVERAGE, None, job="batch encode", note=f"no active users found ({source})")  # fmt: skip
    return Measure(USER_HISTORY_STATE, STATES_COVERAGE, found / sampled, job="batch encode", note=note, sample=sampled)  # fmt: skip
