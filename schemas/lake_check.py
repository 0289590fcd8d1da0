"""Check a batch job's input files before any pipeline is built or any output is touched.

A truncated file or one written with another schema otherwise fails deep inside a Beam
worker, as a several-hundred-line traceback that never names the file, after the job
has created its output directories. Reading each footer's schema is cheap (no data is
read), names the file, and says what is wrong with it.

Types must match the lake schemas (``schemas/arrow.py``) exactly for the columns a job
reads: the jobs rely on them (``event_ts`` is cast to int64 as milliseconds, so a file
in microseconds would not fail, it would be silently wrong). Extra columns are allowed.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.arrow import LAKE_TABLES
from schemas.errors import LakeError


def files_of(patterns: Iterable[str]) -> list[str]:
    """The files matching each glob, in order (a pattern matching nothing adds nothing)."""
    return [f for pattern in patterns for f in sorted(glob.glob(pattern))]


def check_parquet_files(files: Iterable[str | Path], table: str, columns: Sequence[str]) -> int:
    """Each file must be readable Parquet holding ``columns`` with the types the lake
    schema of ``table`` gives them; returns how many files were checked."""
    expected = LAKE_TABLES[table]
    checked = 0
    for path in files:
        schema = _read_schema(Path(path), table)
        for name in columns:
            want = expected.field(name).type
            at = schema.get_field_index(name)
            if at < 0:
                raise LakeError(
                    f"{path}: no column {name!r}; the {table} table needs {list(columns)} "
                    "(schemas/arrow.py); rewrite or remove the file"
                )
            got = schema.field(at).type
            if not got.equals(want):
                raise LakeError(
                    f"{path}: column {name!r} is {got}, the {table} table needs {want} "
                    "(schemas/arrow.py); rewrite or remove the file"
                )
        checked += 1
    return checked


def _read_schema(path: Path, table: str) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise LakeError(
            f"{path}: not a readable Parquet file ({reason}); restore or remove it from "
            f"the {table} table"
        ) from exc
