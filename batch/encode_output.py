"""Where the encode job's rows go, and how a run replaces them without harming the last one.

Offline layout: ``<lake>/user_history_state/dt=DATE/<version>/part-SSSSS.parquet`` (one file
per hash shard, rows sorted by user_id). The version directory lets the states of two
model versions for one day live side by side (a retrain encodes vN+1 while vN serves);
its name has no ``=`` so Hive readers (Feast's dask offline store) do not turn it into a
second ``model_version`` column. Beside the part files, ``_manifest.json`` records which
model wrote them (``{model_name, model_version, dt, rows, encoder_sha256}``): rows carry
only the version, and ``towerline publish`` must not take ``other`` v1 for ``two_tower``
v1. Names starting with ``_`` are skipped by pyarrow and dask, so readers see only rows;
partitions written before the manifest existed have none and stay readable.

A run writes every file into a hidden staging directory beside the table
(``.staging-dt=DATE-<version>``; pyarrow and dask skip names starting with ``.``), then
``publish`` swaps it in: the previous ``dt=DATE/<version>`` is renamed aside, the staging
directory renamed into its place, and the old one deleted. A crash between the two renames
is repaired by ``recover`` on the next run (the old directory is put back). A lock file
keeps two runs of the same (DATE, version) apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import glob
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from schemas.arrow import USER_HISTORY_STATE
from schemas.lake import partition_dir, partitions, table_dir
from towerline.core.errors import RefusedError
from towerline.core.names import check_version

STATE_TABLE = "user_history_state"
PART_GLOB = "part-*.parquet"
STATE_MANIFEST = "_manifest.json"
# Floats do not compress; only the constant model_version column is worth a dictionary.
PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": ["model_version"]}


class EncodeOutputError(RefusedError):
    """The staged output is not what the run computed, or another run holds the lock."""


@dataclasses.dataclass(frozen=True)
class OutputPaths:
    """The directories of one (DATE, version) output."""

    final: Path  # <lake>/user_history_state/dt=DATE/<version>
    staging: Path  # <lake>/user_history_state/.staging-dt=DATE-<version>
    retired: Path  # the previous final while it is being replaced
    lock: Path
    spill: Path  # the pipeline's shuffled events (batch.encode_ops.spill_by_shard)

    @classmethod
    def of(cls, lake: Path, day: dt.date, version: str) -> OutputPaths:
        check_version(version)  # it becomes a directory name in the lake
        root = table_dir(Path(lake), STATE_TABLE)
        hidden = f"dt={day.isoformat()}-{version}"
        return cls(
            final=partition_dir(Path(lake), STATE_TABLE, day) / version,
            staging=root / f".staging-{hidden}",
            retired=root / f".retired-{hidden}",
            lock=root / f".lock-{hidden}",
            spill=root / f".spill-{hidden}",
        )


@contextlib.contextmanager
def exclusive(paths: OutputPaths) -> Iterator[None]:
    """Hold the (DATE, version) lock; fail at once if another run holds it."""
    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise EncodeOutputError(f"another encode run holds {paths.lock}") from exc
        yield


def recover(paths: OutputPaths) -> None:
    """Undo what a crashed run left: restore a final directory caught mid-swap, drop the
    retired copy of a finished swap, and empty the staging and spill directories."""
    if paths.retired.exists():
        if paths.final.exists():
            shutil.rmtree(paths.retired)
        else:
            paths.final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(paths.retired, paths.final)
    for directory in (paths.staging, paths.spill):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)


def write_part(staging: Path, shard: int, table: pa.Table) -> Path:
    """Write one shard's rows; the name appears only once the file is complete, so the
    progress monitor never reads a half-written footer."""
    final = Path(staging) / f"part-{shard:05d}.parquet"
    tmp = final.with_name(f".{final.name}.tmp")
    pq.write_table(table.cast(USER_HISTORY_STATE), tmp, **PARQUET_OPTIONS)
    os.replace(tmp, final)
    return final


def verify_staging(staging: Path, expected_rows: int | None) -> int:
    """Check the staged files hold one row per user, and ``expected_rows`` rows (the
    pipeline's counter; None where the runner reports no metrics). Returns the rows."""
    files = sorted(Path(staging).glob(PART_GLOB))
    users = ds.dataset(files, format="parquet", schema=USER_HISTORY_STATE).to_table(
        columns=["user_id"]
    )
    ids = users["user_id"].to_numpy()
    if expected_rows is not None and len(ids) != expected_rows:
        raise EncodeOutputError(f"staged {len(ids)} rows, the pipeline encoded {expected_rows}")
    if len(np.unique(ids)) != len(ids):
        raise EncodeOutputError("staged output holds a user twice; not publishing it")
    return len(ids)


def source_rows(globs: list[str]) -> int:
    """Rows in the Parquet files matching ``globs``, from their footers (cheap)."""
    files = [f for pattern in globs for f in glob.glob(pattern)]
    return sum(pq.read_metadata(f).num_rows for f in files)


def verify_events(seen: int | None, expected: int) -> None:
    """The pipeline must have encoded from every event it was given: a runner that drops
    elements (see batch.encode.DEFAULT_PIPELINE_ARGS) must not publish wrong states."""
    if seen is not None and seen != expected:
        raise EncodeOutputError(
            f"the pipeline saw {seen:,} of {expected:,} offsite events; not publishing"
        )


def write_manifest(staging: Path, doc: dict[str, Any]) -> None:
    """Record who wrote the staged rows (published with them by the same rename)."""
    (Path(staging) / STATE_MANIFEST).write_text(json.dumps(doc, indent=2, sort_keys=True))


def read_manifest(version_dir: Path) -> dict[str, Any] | None:
    """The ``_manifest.json`` of a published ``dt=DATE/<version>`` (None: written before
    manifests existed, or not by the encode job)."""
    path = Path(version_dir) / STATE_MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise EncodeOutputError(
            f"{path} is not valid JSON ({exc}); re-run the encode job for that day"
        ) from exc
    if not isinstance(doc, dict):
        raise EncodeOutputError(f"{path} is not a JSON object; re-run the encode job")
    return doc


def publish(paths: OutputPaths) -> None:
    """Swap the staging directory in as ``dt=DATE/<version>`` (see the module docstring)."""
    paths.final.parent.mkdir(parents=True, exist_ok=True)
    if paths.final.exists():
        os.replace(paths.final, paths.retired)
    os.replace(paths.staging, paths.final)
    shutil.rmtree(paths.retired, ignore_errors=True)


def read_published(paths: OutputPaths) -> pa.Table:
    """The published rows of one (DATE, version), USER_HISTORY_STATE."""
    return ds.dataset(paths.final, format="parquet", schema=USER_HISTORY_STATE).to_table()


def newer_partitions(lake: Path, day: dt.date, version: str) -> list[dt.date]:
    """Later days that already hold states of ``version``: writing ``day`` online then
    would replace fresher states with older ones (SQLite overwrites; Redis would skip)."""
    return [
        d
        for d in partitions(Path(lake), STATE_TABLE)
        if d > day and (partition_dir(Path(lake), STATE_TABLE, d) / version).is_dir()
    ]


class StagingProgress(threading.Thread):
    """Prints users done and rate while a pipeline runs, read from the staged files.

    Works for any runner whose workers write to a file system this process sees: the
    progress is the output itself, no metrics channel from the workers is needed."""

    def __init__(
        self,
        staging: Path,
        shards: int,
        interval_s: float = 5.0,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="encode-progress", daemon=True)
        self.staging, self.shards, self.interval_s = Path(staging), shards, interval_s
        self.out, self.clock = out or sys.stderr, clock
        self.rows: dict[Path, int] = {}
        self.started = clock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.report()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.report()

    def report(self) -> None:
        with contextlib.suppress(FileNotFoundError):  # published or cleaned meanwhile
            for path in self.staging.glob(PART_GLOB):
                if path not in self.rows:
                    self.rows[path] = pq.read_metadata(path).num_rows
        users, elapsed = sum(self.rows.values()), self.clock() - self.started
        rate = users / elapsed if elapsed > 0 else 0.0
        print(
            f"encode: {len(self.rows)}/{self.shards} shards, {users:,} users, "
            f"{rate:,.0f} users/s, {elapsed:,.0f} s",
            file=self.out,
            flush=True,
        )


class OnlineProgress:
    """``write_online``'s ``on_batch``: one line every ``interval_s``, not one per batch."""

    def __init__(
        self,
        total: int,
        out: TextIO,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.out, self.interval_s, self.clock = total, out, interval_s, clock
        self.done, self.started = 0, clock()
        self.printed = self.started

    def __call__(self, rows: int) -> None:
        self.done += rows
        now = self.clock()
        if now - self.printed < self.interval_s and self.done < self.total:
            return
        self.printed = now
        rate = self.done / max(now - self.started, 1e-9)
        print(
            f"online: {self.done:,}/{self.total:,} rows, {rate:,.0f} rows/s",
            file=self.out,
            flush=True,
        )
