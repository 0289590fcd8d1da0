"""The monitor's history file: one JSON line per collection (its measures, SLO results and
unreachable sources; not the sampled ages), for the report's lag-over-time plots.

Appended the way the run ledger is: one ``write`` on a file opened ``O_APPEND`` under an
exclusive ``flock``, fsynced, after ending a torn last line left by a writer that died;
readers skip lines that do not parse.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import math
from dataclasses import asdict
from pathlib import Path

from monitoring.model import Measure, SloResult, Snapshot
from towerline.core.errors import UnavailableError
from towerline.core.files import append_line

HISTORY_VERSION = 1
HISTORY_FILE = "freshness_history.jsonl"  # default: beside the run ledger


class HistoryError(UnavailableError):
    """The history file cannot be written or read."""


def to_json(snapshot: Snapshot) -> str:
    doc = {
        "history": HISTORY_VERSION,
        "taken_at": snapshot.taken_at.isoformat(),
        "measures": [asdict(m) for m in snapshot.measures],
        "slos": [asdict(r) for r in snapshot.slos],
        "unreachable": list(snapshot.unreachable),
        "notes": list(snapshot.notes),
    }
    return json.dumps(doc, sort_keys=True, allow_nan=False)


def from_json(line: str) -> Snapshot:
    doc = json.loads(line)
    return Snapshot(
        taken_at=dt.datetime.fromisoformat(doc["taken_at"]),
        measures=tuple(Measure(**m) for m in doc["measures"]),
        slos=tuple(SloResult(**r) for r in doc.get("slos", ())),
        unreachable=tuple(doc.get("unreachable", ())),
        notes=tuple(doc.get("notes", ())),
    )


def append(path: Path, snapshot: Snapshot) -> None:
    """Append ``snapshot`` as one line: atomic against other writers, durable on return."""
    try:
        append_line(path, to_json(_finite(snapshot)).encode())
    except OSError as exc:
        raise HistoryError(f"cannot append to the freshness history {path}: {exc.strerror}") from exc  # fmt: skip


def read(path: Path, limit: int | None = 10_000) -> list[Snapshot]:
    """The last ``limit`` readable snapshots, oldest first; a missing file is empty."""
    try:
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HistoryError(f"cannot read the freshness history {path}: {exc.strerror}") from exc
    kept: collections.deque[Snapshot] = collections.deque(maxlen=limit)
    with handle:
        for line in handle:
            try:
                kept.append(from_json(line))
            except (ValueError, KeyError, TypeError):
                continue  # a torn or foreign line
    return list(kept)


def _finite(snapshot: Snapshot) -> Snapshot:
    """JSON has no NaN or infinity: such a value is written as not measured."""

    def clean(m: Measure) -> Measure:
        if m.value is None or math.isfinite(m.value):
            return m
        return dataclasses.replace(m, value=None, note=f"{m.note}; value {m.value}".strip("; "))

    def clean_slo(r: SloResult) -> SloResult:
        return (
            r if r.worst is None or math.isfinite(r.worst) else dataclasses.replace(r, worst=None)
        )

    measures = tuple(clean(m) for m in snapshot.measures)
    return dataclasses.replace(
        snapshot, measures=measures, slos=tuple(map(clean_slo, snapshot.slos))
    )
