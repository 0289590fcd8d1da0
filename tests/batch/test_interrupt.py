"""Ctrl-C during a pipeline run: the processes started during it die, the caller sees
one KeyboardInterrupt (the real CLI run is in tests/cli/test_errors_batch.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from batch.interrupt import descendants, stop_workers_on_interrupt

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
SLEEPER_SH = f"{sys.executable} -c 'import time; time.sleep(60)'"


def _state(pid: int) -> str | None:
    """A process's state letter (``Z`` zombie, …), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2]


def still_running(pid: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while _state(pid) not in (None, "Z"):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
    return False


def running_in_group(group: int, wait_s: float) -> list[int]:
    """Processes of process group ``group`` that still run (zombies do not) after up to
    ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        running = []
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                stat = stat_file.read_text()
            except OSError:
                continue
            state, _, pgrp = stat[stat.rfind(")") + 2 :].split()[:3]
            if int(pgrp) == group and state != "Z":
                running.append(int(stat_file.parent.name))
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def test_sigint_kills_the_workers_started_meanwhile_and_only_those() -> None:
    older = subprocess.Popen(SLEEPER)  # not started by the run: must survive it
    hook = threading.excepthook
    try:
        with pytest.raises(KeyboardInterrupt), stop_workers_on_interrupt() as fired:
            worker = subprocess.Popen(["/bin/sh", "-c", f"{SLEEPER_SH}; true"])
            deadline = time.monotonic() + 10
            while len(descendants(worker.pid)) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)  # the shell has started its python child
            grandchild = descendants(worker.pid).pop()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)  # the handler raises KeyboardInterrupt here
        assert fired.is_set()
        assert worker.wait(timeout=10) == -signal.SIGKILL
        assert not still_running(grandchild, wait_s=10)  # re-parented to init, killed too
        assert older.poll() is None
    finally:
        threading.excepthook = hook  # stays quiet after an interrupt, by design
        older.kill()
        older.wait()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_what_the_runner_raises_while_unwinding_is_reported_as_the_interrupt() -> None:
    hook = threading.excepthook
    try:
        with pytest.raises(KeyboardInterrupt), stop_workers_on_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)
            except KeyboardInterrupt:
                raise RuntimeError("Worker subprocess exited with return code -9") from None
    finally:
        threading.excepthook = hook


def test_without_an_interrupt_errors_and_threads_report_as_usual() -> None:
    hook = threading.excepthook
    with pytest.raises(ValueError, match="real"), stop_workers_on_interrupt():
        raise ValueError("real failure")
    assert threading.excepthook is hook
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_beam_starts_workers_in_groups_of_their_own_that_die_whole() -> None:
    """A terminal's Ctrl-C then reaches only this process, whose handler kills each
    worker's group (also a process its shell forked after the tree was listed)."""
    from apache_beam.runners.portability import local_job_service as service

    hook = threading.excepthook
    try:
        with pytest.raises(KeyboardInterrupt), stop_workers_on_interrupt():
            worker = service.subprocess.Popen(f"{SLEEPER_SH}; true", shell=True)
            assert os.getpgid(worker.pid) == worker.pid != os.getpgrp()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        assert worker.wait(timeout=10) == -signal.SIGKILL
        assert not running_in_group(worker.pid, wait_s=10)
        # A worker thread that was about to start one when Ctrl-C came is refused ...
        interrupted = service.subprocess
        with pytest.raises(RuntimeError, match="the job was interrupted"):
            interrupted.Popen(SLEEPER_SH, shell=True)
        # ... and the next run starts its workers as usual, then hands Beam back its module.
        with stop_workers_on_interrupt():
            assert service.subprocess is not interrupted
            started = service.subprocess.Popen(["true"])
            assert started.wait(timeout=10) == 0
        assert service.subprocess is subprocess
    finally:
        threading.excepthook = hook
