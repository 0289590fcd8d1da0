"""Ctrl-C during a Beam job: stop the worker processes so the job ends at once.

The DirectRunner's ``multi_processing`` mode starts its SDK workers as child processes
(``sh -c python -m apache_beam.runners.worker.sdk_worker_main``), each from a non-daemon
thread that waits for it. A KeyboardInterrupt in the main thread alone leaves those
workers waiting on a gRPC channel nobody answers, and the interpreter then waits for the
threads at exit: the CLI hung for minutes and a second Ctrl-C did not help.

``stop_workers_on_interrupt`` runs a pipeline under a SIGINT handler that kills every
process started during the run (workers and their shells) and raises KeyboardInterrupt;
the runner's clean-up then finds its workers gone and returns. Each further SIGINT kills
and interrupts again, never ignored. The runner's threads report the killed workers as
failures; after an interrupt those reports are not printed.

Beam 2.77 has no option for how it starts workers, so for the run its
``local_job_service`` is given a ``subprocess`` whose ``Popen`` (``_WorkerStarter``):

- starts each worker in a process group of its own: a terminal's Ctrl-C goes to the
  whole foreground group, and workers that got it printed a traceback each before the
  CLI's one line; now only this process gets it, and kills each worker's group whole;
- refuses to start a worker once the run was interrupted: a worker thread that was
  about to start one when Ctrl-C came would otherwise start it after the kill, and the
  process would wait for it forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc (empty where there is none)."""
    found: dict[int, int] = {}
    for entry in PROC.glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile, or not ours to read
        # The command name (field 2) may hold spaces and parentheses: split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        found[int(entry.name)] = int(fields[1])
    return found


def descendants(pid: int | None = None) -> set[int]:
    """Every process below ``pid`` (default: this process), at this moment."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class _WorkerStarter:
    """``subprocess`` as Beam's ``local_job_service`` sees it during one run (see the
    module docstring): the same module but for ``Popen``."""

    def __init__(self) -> None:
        self.before = descendants()
        self.groups: list[int] = []  # each worker's process group (= its shell's pid)
        self.stopped = False
        # Starting a worker and stopping the run exclude each other, so a worker is
        # either recorded before the kill or never started. Re-entrant: the SIGINT handler
        # runs in the main thread, which may be the one holding it.
        self.lock = threading.RLock()

    def __getattr__(self, name: str) -> object:
        return getattr(subprocess, name)

    def Popen(self, *args: object, **kwargs: object) -> subprocess.Popen:  # noqa: N802 (its name)
        with self.lock:
            if self.stopped:
                raise RuntimeError("not starting an SDK worker: the job was interrupted")
            kwargs.setdefault("process_group", 0)
            started = subprocess.Popen(*args, **kwargs)
            if kwargs["process_group"] == 0:
                self.groups.append(started.pid)
            return started

    def stop(self) -> list[int]:
        """Refuse further workers; SIGKILL each worker's group and every process started
        since this run began. Returns the pids found below this process.

        The tree is listed before the first kill, so a worker whose shell dies first
        (and is re-parented to init) is still found. SIGKILL, not SIGTERM: a worker holds
        nothing to save (its output goes to a staging directory the caller deletes), and
        a terminated shell would orphan the worker it started."""
        with self.lock:
            self.stopped = True
            doomed = sorted(descendants() - self.before)
            own = os.getpgrp()
            for group in self.groups:
                if group != own:  # never this process's own group (the terminal's, in a CLI)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(group, signal.SIGKILL)
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            return doomed


@contextlib.contextmanager
def _route_worker_starts(starter: _WorkerStarter) -> Iterator[None]:
    """Beam starts its workers through ``starter`` while this is open. An interrupted
    run's starter stays in place (its threads may still try to start a worker); the next
    run replaces it."""
    from apache_beam.runners.portability import local_job_service as service

    current = getattr(service, "subprocess", None)
    if current is not subprocess and not isinstance(current, _WorkerStarter):
        yield  # another Beam layout, or someone else's routing: leave it as it is
        return
    service.subprocess = starter
    try:
        yield
    finally:
        if not starter.stopped:
            service.subprocess = subprocess


@contextlib.contextmanager
def stop_workers_on_interrupt() -> Iterator[threading.Event]:
    """Run a pipeline under a SIGINT handler that kills the processes started meanwhile
    and raises KeyboardInterrupt. Yields the event that is set once SIGINT arrived.

    Anything the interrupted runner raises while it unwinds (a worker that "failed", a
    closed channel) is re-raised as KeyboardInterrupt, so the caller sees one cause.
    Outside the main thread (where no handler can be installed) it does nothing."""
    fired = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield fired
        return
    starter = _WorkerStarter()

    def on_sigint(signum: int, frame: object) -> None:
        starter.stop()
        fired.set()
        raise KeyboardInterrupt

    previous_hook = threading.excepthook
    threads_before = set(threading.enumerate())

    def quiet_after_interrupt(args: threading.ExceptHookArgs) -> None:
        # The runner's threads may die after the run has unwound, so this hook stays
        # after an interrupt; threads that were there before the run report as usual.
        if not fired.is_set() or args.thread in threads_before:
            previous_hook(args)

    previous = signal.signal(signal.SIGINT, on_sigint)
    threading.excepthook = quiet_after_interrupt
    try:
        with _route_worker_starts(starter):
            yield fired
    except BaseException as exc:
        if fired.is_set() and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        if fired.is_set():
            starter.stop()  # anything started while the runner unwound
        else:
            threading.excepthook = previous_hook
