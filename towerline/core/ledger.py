"""The run ledger: one JSON line per batch step run, appended when the run ends.

Every batch step (``load-profiles``, ``batch encode``, ``batch corpus``, ``batch index``,
``publish``, ``rollback``, later ``retrain`` and ``daily``) records itself here, success
or failure, so the monitor can tell how old each batch view is and the daily chain can
tell which steps of a day are done. One format, one writer, one reader: this module.

A line is written with one ``write`` on a file opened ``O_APPEND`` under an exclusive
``flock`` and fsynced, so concurrent runs never interleave and a crash leaves at worst a
torn last line, which readers skip. A run records ``success`` only after its output is
published: a job killed midway leaves no line at all, never a success.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from towerline.core.contracts import PIN_PROFILE, USER_HISTORY_STATE, USER_PROFILE
from towerline.core.errors import EXIT_INTERRUPTED, UnavailableError
from towerline.core.files import append_line

LEDGER_VERSION = 1
JOBS: tuple[str, ...] = (
    "load-profiles",
    "batch encode",
    "batch corpus",
    "batch index",
    "publish",
    "rollback",
    "retrain",
    "daily",
)
SUCCESS, FAILED, INTERRUPTED = "success", "failed", "interrupted"
OUTCOMES: tuple[str, ...] = (SUCCESS, FAILED, INTERRUPTED)
# The feature views a job's success makes fresh (the monitor's batch-view measures).
JOB_VIEWS: dict[str, tuple[str, ...]] = {
    "load-profiles": (USER_PROFILE, PIN_PROFILE),
    "batch encode": (USER_HISTORY_STATE,),
}


class LedgerError(UnavailableError):
    """The ledger cannot be written or read."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RunRecord:
    """One finished run of a batch step."""

    job: str
    outcome: str
    started_at: dt.datetime
    finished_at: dt.datetime
    partition: dt.date | None = None  # the day the run is for (``--dt``), if any
    model_name: str | None = None
    model_version: str | None = None
    rows: int | None = None
    output: str | None = None  # what it published: a path or a name
    views: tuple[str, ...] = ()
    error: str | None = None  # one line, for failures
    extra: dict[str, object] = field(default_factory=dict)  # job-specific, JSON values
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def __post_init__(self) -> None:
        if self.job not in JOBS:
            raise ValueError(f"unknown ledger job {self.job!r}; one of {', '.join(JOBS)}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; one of {', '.join(OUTCOMES)}")

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> str:
        doc = asdict(self)
        doc["started_at"] = self.started_at.isoformat()
        doc["finished_at"] = self.finished_at.isoformat()
        doc["partition"] = self.partition.isoformat() if self.partition else None
        doc["views"] = list(self.views)
        return json.dumps({"ledger": LEDGER_VERSION, **doc}, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> RunRecord:
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise ValueError("a ledger line is a JSON object")
        # Fields a newer writer added are dropped, not a reason to lose the whole record.
        doc = {k: v for k, v in doc.items() if k in _FIELDS}
        doc["started_at"] = dt.datetime.fromisoformat(doc["started_at"])
        doc["finished_at"] = dt.datetime.fromisoformat(doc["finished_at"])
        day = doc.get("partition")
        doc["partition"] = dt.date.fromisoformat(day) if day else None
        doc["views"] = tuple(doc.get("views") or ())
        doc["extra"] = dict(doc.get("extra") or {})
        return cls(**doc)


_FIELDS = frozenset(f.name for f in fields(RunRecord))


def append(path: Path, record: RunRecord) -> None:
    """Append ``record`` as one line: atomic against other writers, durable on return."""
    try:
        append_line(path, record.to_json().encode())
    except OSError as exc:
        raise LedgerError(f"cannot append to the run ledger {path}: {exc.strerror}") from exc


def read(path: Path) -> list[RunRecord]:
    """Every readable record, oldest first; a missing ledger is empty, torn lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LedgerError(f"cannot read the run ledger {path}: {exc.strerror}") from exc
    records = []
    for line in text.splitlines():
        try:
            records.append(RunRecord.from_json(line))
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line: never taken for a run
    return records


def last(
    records: Iterable[RunRecord],
    *,
    job: str | None = None,
    view: str | None = None,
    outcome: str | None = SUCCESS,
    model_name: str | None = None,
    model_version: str | None = None,
    partition: dt.date | None = None,
) -> RunRecord | None:
    """The record that finished last among those matching every given filter."""
    best = None
    for rec in records:
        if (
            (job is None or rec.job == job)
            and (view is None or view in rec.views)
            and (outcome is None or rec.outcome == outcome)
            and (model_name is None or rec.model_name == model_name)
            and (model_version is None or rec.model_version == model_version)
            and (partition is None or rec.partition == partition)
            and (best is None or rec.finished_at >= best.finished_at)
        ):
            best = rec
    return best


class Run:
    """Record one run of ``job`` in the ledger at ``path`` (``None``: record nothing).

    ``with Run(path, "batch corpus", partition=day) as run: ...; run.succeeded(rows=n)``
    appends ``success`` when the block ends after ``succeeded``; ``failed`` (with the
    error's first line) when it raises; ``interrupted`` on Ctrl-C. The exception is never
    swallowed. Call ``succeeded`` only once the output is published.
    """

    def __init__(
        self,
        path: Path | None,
        job: str,
        *,
        partition: dt.date | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
        views: tuple[str, ...] | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.path, self.clock = path, clock
        self._record = RunRecord(
            job=job,
            outcome=FAILED,
            started_at=clock(),
            finished_at=clock(),
            partition=partition,
            model_name=model_name,
            model_version=model_version,
            views=JOB_VIEWS.get(job, ()) if views is None else views,
        )
        self.record: RunRecord | None = None  # what was appended, once it was

    def __enter__(self) -> Run:
        self._record = replace(self._record, started_at=self.clock())
        return self

    def succeeded(
        self,
        *,
        rows: int | None = None,
        output: str | Path | None = None,
        model_version: str | None = None,
        partition: dt.date | None = None,
        **extra: object,
    ) -> None:
        """The output is published: the run ends as a success unless the block raises."""
        rec = self._record
        self._record = replace(
            rec,
            outcome=SUCCESS,
            rows=rows,
            output=None if output is None else str(output),
            model_version=model_version or rec.model_version,
            partition=partition or rec.partition,
            extra={**rec.extra, **extra},
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        rec = self._record
        if exc is not None:
            interrupted = (
                isinstance(exc, KeyboardInterrupt)
                or getattr(exc, "exit_code", 0) == EXIT_INTERRUPTED
            )
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            rec = replace(rec, outcome=INTERRUPTED if interrupted else FAILED, error=first_line)
        elif rec.outcome != SUCCESS:
            rec = replace(rec, error="the run ended without publishing its output")
        rec = replace(rec, finished_at=self.clock())
        self.record = rec
        if self.path is None:
            return
        try:
            append(self.path, rec)
        except LedgerError as problem:
            if exc is None:
                raise  # published but unrecorded: the monitor would call it stale, say so
            # The step's own error is the one to report; the ledger's goes with it.
            exc.add_note(str(problem))


# --- what each step's result says: the CLI and the demo record the same facts -------------


def facts(job: str, result: Mapping[str, Any], **more: object) -> dict[str, Any]:
    """``Run.succeeded`` keywords from what ``job``'s library call returned: rows, output,
    the resolved model version and the ids worth keeping (as extra). ``more`` adds or
    overrides, e.g. ``output=`` where the result does not name it."""
    return {**_FACTS[job](result), **more}


def _profiles(counts: Mapping[str, Any]) -> dict[str, Any]:
    return {"rows": sum(counts.values()), "view_rows": dict(counts)}


def _encode(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "rows": summary["rows"],
        "output": summary["offline_path"],
        "model_version": summary["model_version"],
        "events": summary.get("events"),
        "online_rows": summary.get("online_rows"),
        "online": summary.get("online"),
    }


def _corpus(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "rows": manifest["num_items"],
        "output": manifest["path"],
        "snapshot_id": manifest["snapshot_id"],
        "created_at": manifest["created_at"],
    }


def _index(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "rows": meta["num_items"],
        "output": meta["path"],
        "model_version": meta["model_version"],
        "built_at": meta["built_at"],
        "corpus_snapshot": meta["corpus_snapshot"],
    }


def _serving(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A ``serving.json`` written by publish or rollback (the caller gives its path)."""
    states = doc.get("history_states") or {}
    return {
        "model_version": doc["model_version"],
        "index_dir": doc["dir"],
        "corpus_snapshot": doc.get("corpus_snapshot"),
        "published_at": doc.get("published_at"),
        "states_partition": states.get("partition"),
        "previous_version": (doc.get("previous") or {}).get("model_version"),
    }


_FACTS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "load-profiles": _profiles,
    "batch encode": _encode,
    "batch corpus": _corpus,
    "batch index": _index,
    "publish": _serving,
    "rollback": _serving,
}
