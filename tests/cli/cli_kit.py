"""Run the real `towerline` CLI in a child process and check how it fails.

A user error must end in one line ``error: …`` on stderr naming what was wrong, the
documented exit code (1 refused or failed, 2 bad usage or input, 130 interrupted), no
traceback, and no library WARNING/ERROR lines.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where a child's batch steps record their runs unless the test names a ledger: never the
# repository's own .towerline/ (the children run in ROOT).
SCRATCH_LEDGER = Path(tempfile.gettempdir()) / f"towerline-tests-{os.getpid()}" / "ledger.jsonl"
_LIBRARY_NOISE = re.compile(r"^(WARNING|ERROR|CRITICAL)[: ]|Traceback \(most recent call last\)")


@dataclass(frozen=True)
class Ran:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"towerline {' '.join(self.args)} -> {self.code}\n{self.stdout}\n{self.stderr}"


def towerline(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 180) -> Ran:
    """``towerline ARGS`` as a user would run it (``python -m towerline.cli``), from ROOT."""
    argv = [str(a) for a in args]
    full_env = {**child_env(), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "towerline.cli", *argv],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Ran(tuple(argv), done.returncode, done.stdout, done.stderr)


def child_env() -> dict[str, str]:
    """The environment of a child ``towerline``: this one, plain output, and a ledger
    outside the repository (the test's ``TOWERLINE_LEDGER`` if it set one)."""
    ledger = os.environ.get("TOWERLINE_LEDGER") or str(SCRATCH_LEDGER)
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TOWERLINE_LEDGER": ledger}


def assert_user_error(ran: Ran, code: int, *needles: str) -> str:
    """The run failed as a user error: exit ``code``, one ``error:`` line naming ``needles``."""
    assert ran.code == code, str(ran)
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, str(ran)
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert lines and lines[-1] == errors[0], f"the error is not the last line:\n{ran}"
    noisy = [line for line in (ran.stdout + ran.stderr).splitlines() if _LIBRARY_NOISE.search(line)]
    assert not noisy, f"library noise or a traceback:\n{ran}"
    for needle in needles:
        assert needle.lower() in errors[0].lower(), f"{needle!r} not named in: {errors[0]}"
    return errors[0]


def snapshot(root: Path) -> dict[str, str]:
    """Path -> sha256 of every file under ``root`` (empty when it does not exist)."""
    if not Path(root).exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


def towerline_here(*args: str | Path) -> Ran:
    """The same CLI, in this process (no interpreter start-up): for tests that run it often."""
    import contextlib
    import io

    from towerline.cli.app import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return Ran(tuple(str(a) for a in args), code, out.getvalue(), err.getvalue())
