"""Layout of the Parquet lake: where each table and each ``dt=`` partition lives."""

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from schemas.arrow import LAKE_TABLES, PARTITIONED_TABLES
from schemas.errors import LakeError
from schemas.lake_check import check_parquet_files


def parse_dt(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise LakeError(f"dt must be YYYY-MM-DD, got {value!r}") from exc


def table_dir(lake: Path, table: str) -> Path:
    if table not in LAKE_TABLES:
        raise LakeError(f"unknown lake table {table!r}; known: {sorted(LAKE_TABLES)}")
    return Path(lake) / table


def partition_dir(lake: Path, table: str, day: dt.date | str) -> Path:
    if table not in PARTITIONED_TABLES:
        raise LakeError(f"table {table!r} is not partitioned by dt")
    day = parse_dt(day) if isinstance(day, str) else day
    return table_dir(lake, table) / f"dt={day.isoformat()}"


def partitions(lake: Path, table: str) -> list[dt.date]:
    """The dt partitions present for ``table``, oldest first."""
    root = table_dir(lake, table)
    if not root.is_dir():
        return []
    days = [parse_dt(p.name[3:]) for p in root.glob("dt=*") if p.is_dir()]
    return sorted(days)


def read_partition(lake: Path, table: str, day: dt.date | str) -> pa.Table:
    path = partition_dir(lake, table, day)
    if not path.is_dir():
        raise LakeError(f"no partition {path} in the lake")
    return _read_dir(path, table)


def read_table(lake: Path, table: str) -> pa.Table:
    """A whole unpartitioned table (``pins``, ``users``)."""
    path = table_dir(lake, table)
    if not path.is_dir():
        raise LakeError(f"no table {path} in the lake; run `towerline generate` first")
    return _read_dir(path, table)


def _read_dir(path: Path, table: str) -> pa.Table:
    """Every Parquet file of ``path`` as the lake schema of ``table``; a file that is not
    readable or not of that schema is named (checked first: Arrow's own error does not)."""
    files = sorted(str(f) for f in path.glob("*.parquet"))
    check_parquet_files(files, table, LAKE_TABLES[table].names)
    return ds.dataset(path, format="parquet", schema=LAKE_TABLES[table]).to_table()
