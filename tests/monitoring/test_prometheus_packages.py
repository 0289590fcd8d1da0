"""`.ci/system-packages.sh` (run by `make setup`): the Debian packages the tests need.

The "all present" path runs against this machine as it is. The other paths run the script
with a PATH of stand-ins (no package is ever removed here): a fake `apt-get` that records
its arguments and provides the programs, a fake `id` for a user who is not root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "system-packages.sh"
BASH = shutil.which("bash") or "/bin/bash"
PROGRAMS = ("promtool", "prometheus", "chromium")
CHMOD = shutil.which("chmod") or "/bin/chmod"


def _run(path: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run([BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)


def _tool(bin_dir: Path, name: str, body: str) -> None:
    (bin_dir / name).write_text(f"#!{BASH}\n{body}\n")
    (bin_dir / name).chmod(0o755)


def _bare_path(tmp_path: Path, *programs: str) -> Path:
    """A bin directory with the given real programs linked in, and nothing else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in programs:
        real = shutil.which(name)
        assert real, name
        (bin_dir / name).symlink_to(real)
    return bin_dir


def test_everything_present_is_silent_and_fast() -> None:
    for program in PROGRAMS:
        assert shutil.which(program), f"{program} missing: run `make setup`"
    started = time.monotonic()
    done = _run(os.environ["PATH"])
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert time.monotonic() - started < 5


def test_missing_programs_are_installed_with_apt_get_as_root(tmp_path: Path) -> None:
    bin_dir = _bare_path(tmp_path, "id", "prometheus")  # promtool and chromium missing
    calls = tmp_path / "apt-calls"
    fake_apt = (
        f'echo "$DEBIAN_FRONTEND $*" >> {calls}\n'
        f'if [ "$1" = install ]; then for p in promtool chromium; do '
        f"printf '#!/bin/sh\\n' > {bin_dir}/$p; {CHMOD} +x {bin_dir}/$p; done; fi"
    )
    _tool(bin_dir, "apt-get", fake_apt)
    done = _run(str(bin_dir))
    assert done.returncode == 0, done.stderr
    assert "installing Debian package(s): prometheus chromium" in done.stdout
    lines = calls.read_text().splitlines()
    assert lines[0] == "noninteractive update -q"
    assert lines[1] == "noninteractive install -y -q --no-install-recommends prometheus chromium"


def test_without_apt_get_it_fails_in_one_line_naming_the_packages(tmp_path: Path) -> None:
    done = _run(str(_bare_path(tmp_path, "id")))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "prometheus chromium" in done.stderr and "no apt-get" in done.stderr


def test_not_root_without_sudo_says_the_command_to_run(tmp_path: Path) -> None:
    bin_dir = _bare_path(tmp_path, "promtool", "prometheus")
    _tool(bin_dir, "id", "echo 1000")
    _tool(bin_dir, "apt-get", f"touch {tmp_path / 'apt-was-called'}")
    done = _run(str(bin_dir))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "sudo apt-get install -y --no-install-recommends chromium" in done.stderr
    assert not (tmp_path / "apt-was-called").exists()


def test_a_failing_apt_get_fails_in_one_last_line(tmp_path: Path) -> None:
    bin_dir = _bare_path(tmp_path, "id", "promtool", "prometheus")
    _tool(bin_dir, "apt-get", "echo 'E: Unable to locate package chromium' >&2; exit 100")
    done = _run(str(bin_dir))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not install Debian package(s) chromium; run: sudo ")
