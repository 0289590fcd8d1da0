"""Importers of public data sets into the Parquet lake (see schemas/lake.py for the layout).

Shared here: reading a delimited text file into validated columns without a Python loop over
lines, where every rejected line is reported with its file and line number.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_INT = r"^\s*-?\d+\s*$"


@dataclass(frozen=True)
class Malformed:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Rows:
    """The lines of one file still accepted: their text, fields and 1-based line numbers."""

    file: str
    raw: pa.Array
    line: np.ndarray
    bad: list[Malformed]
    fields: list[pa.Array] = field(default_factory=list)

    def reject(self, mask: np.ndarray, reason: str | None) -> None:
        """Drop the rows where ``mask`` is true, reporting each with ``reason`` (None: silently)."""
        if not mask.any():
            return
        if reason is not None:
            for i in np.flatnonzero(mask):
                text = self.raw[int(i)].as_py()[:80]
                self.bad.append(Malformed(self.file, int(self.line[i]), f"{reason}: {text!r}"))
        keep = pa.array(~mask)
        self.raw, self.line = self.raw.filter(keep), self.line[~mask]
        self.fields = [f.filter(keep) for f in self.fields]

    def require_ints(self, columns: dict[int, str]) -> None:
        """Drop rows where a named column is not an integer."""
        for i, what in columns.items():
            ok = pc.match_substring_regex(self.fields[i], _INT).to_numpy(zero_copy_only=False)
            self.reject(~ok, f"{what} is not an integer")

    def as_int(self, i: int) -> np.ndarray:
        return pc.cast(pc.utf8_trim_whitespace(self.fields[i]), pa.int64()).to_numpy()

    def text(self, i: int) -> np.ndarray:
        return np.asarray(self.fields[i].to_pylist(), dtype=object)

    def dedup(self, i: int) -> None:
        """Report repeated ids in column ``i`` (call after require_ints); the first line wins."""
        _, first = np.unique(self.as_int(i), return_index=True)
        dup = np.ones(len(self.line), bool)
        dup[first] = False
        self.reject(dup, "repeated id")


def read_delimited(path: Path, sep: str, n_fields: int, bad: list[Malformed]) -> Rows:
    """Split a file into fields without a Python loop over lines (ml-1m has 1M ratings)."""
    lines = path.read_bytes().decode("latin-1").split("\n")
    raw = pc.utf8_rtrim(pa.array(lines, pa.string()), characters="\r")
    rows = Rows(path.name, raw, np.arange(1, len(lines) + 1), bad)
    rows.reject(pc.equal(pc.utf8_trim_whitespace(raw), "").to_numpy(zero_copy_only=False), None)
    counts = pc.list_value_length(pc.split_pattern(rows.raw, sep)).to_numpy()
    rows.reject(counts != n_fields, f"expected {n_fields} fields separated by {sep!r}")
    parts = pc.split_pattern(rows.raw, sep)
    rows.fields = [pc.list_element(parts, i) for i in range(n_fields)]
    return rows
