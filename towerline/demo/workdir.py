"""The demo's working directory: created and marked by the demo, refused otherwise.

Every run deletes the previous run's lake, registry, Feast data, indexes and corpus under
the workdir. That is only safe in a directory the demo created itself, so it writes a
marker file there on creation; a non-empty directory without the marker (say a real lake
given as --workdir by mistake) is refused unless the user passes --force.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from towerline.core.errors import RefusedError
from towerline.core.files import write_json_atomic

MARKER = ".towerline-demo"
LEDGER_NAME = "ledger.jsonl"  # the run ledger of the demo's batch steps
HISTORY_NAME = "freshness_history.jsonl"  # the monitor's history, beside the ledger
REPORT_NAME = "freshness-report.html"
# What one run writes and the next one replaces (the ledger and the freshness history
# describe the outputs it drops).
RUN_OUTPUTS = (
    "lake",
    "feast",
    "registry",
    "indexes",
    "corpus",
    LEDGER_NAME,
    HISTORY_NAME,
    REPORT_NAME,
)


def claim_workdir(workdir: Path, *, force: bool = False) -> Path:
    """Make ``workdir`` the demo's: create and mark it, or check that it is ours; then
    clear the previous run's outputs. Returns the directory."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise RefusedError(f"--workdir {workdir} is a file, not a directory")
    foreign = workdir.is_dir() and any(workdir.iterdir()) and not (workdir / MARKER).is_file()
    if foreign and not force:
        raise RefusedError(
            f"--workdir {workdir} is not empty and was not created by `towerline demo`; "
            f"the demo replaces {', '.join(RUN_OUTPUTS)} in it, so choose a new directory "
            "or pass --force to use this one anyway"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / MARKER).is_file():
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        write_json_atomic(workdir / MARKER, {"created_by": "towerline demo", "at": now})
    for name in RUN_OUTPUTS:  # a second `make demo` starts from a clean slate
        path = workdir / name
        if path.is_file() or path.is_symlink():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)
    return workdir
