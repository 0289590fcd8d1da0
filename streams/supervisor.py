"""N stream workers as processes of one consumer group (``towerline stream run --processes N``).

A worker is CPU bound in Python, so a second one in the same process would only share
its GIL: each worker here is a forked child process and a full group member, exactly as
if it ran on another host. The group splits the topic's partitions among them; the
exactly-once argument is the per-partition one (``streams.state``: the commit checks the
stored applied offset, every assignment seeks from it), so nothing changes when a child
joins, leaves or dies and the others take its partitions over.

Children are forked (not spawned) after the imports and ``tune_gc``'s freeze: they start in
well under a second instead of re-importing Feast for ten, and share those pages. Each
opens its own Feast store and state store (nothing connected is inherited) and serves
/metrics on ``metrics_port + index``.

The supervisor stops every child with SIGTERM when ``stop`` is set (SIGTERM/Ctrl-C; a
terminal's Ctrl-C also reaches the children directly, which is the same request), waits
for them to finish their batch and leave the group, and kills a child that does not
within ``grace_s`` (safe: nothing half-applied survives a kill). A child that exits on
its own, or does not exit cleanly when stopped, stops the others and is named in a
``WorkerExited`` raised after they are gone. Children die with the supervisor (Linux
parent-death signal), so a killed supervisor leaves no orphan group members behind.
"""

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import wait

import feast

from streams.config import WorkerConfig
from streams.runner import record_half_life, run_worker
from streams.worker import WorkerStats
from towerline.core.errors import EXIT_FAILED, EXIT_USAGE, TowerlineError

log = logging.getLogger(__name__)
GRACE_S = 30.0  # a stopped worker settles one batch and leaves the group: seconds at most
PR_SET_PDEATHSIG = 1
OnStart = Callable[[int, WorkerConfig, int | None], object]  # (index, cfg, metrics port)
OnStop = Callable[[int, WorkerStats], object]


class WorkerExited(TowerlineError):
    """A worker process exited without being asked to, or failed while stopping."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Child:
    """One forked worker: the ``index``-th (from 0) ``of`` N."""

    index: int
    of: int
    process: mp.process.BaseProcess
    unasked: bool = False  # it exited before the supervisor was asked to stop

    @property
    def name(self) -> str:
        return f"stream worker {self.index + 1} of {self.of} (pid {self.process.pid})"


def child_config(cfg: WorkerConfig, index: int) -> WorkerConfig:
    """Child ``index``'s config: its own /metrics port (0 and None stay as they are)."""
    if not cfg.metrics_port:
        return cfg
    return replace(cfg, metrics_port=cfg.metrics_port + index)


def run_workers(
    cfg: WorkerConfig,
    open_store: Callable[[], feast.FeatureStore],
    processes: int,
    stop: threading.Event,
    *,
    on_start: OnStart | None = None,
    on_stop: OnStop | None = None,
    grace_s: float = GRACE_S,
) -> None:
    """Run ``processes`` workers until ``stop`` is set; raise ``WorkerExited`` naming the
    first child that exited on its own or failed (after stopping the others)."""
    children = start_workers(cfg, open_store, processes, on_start=on_start, on_stop=on_stop)
    try:
        for c in supervise(children, stop):
            c.unasked = not stop.is_set()
    finally:
        stop_workers(children, grace_s)
    failed = sorted((c for c in children if c.unasked or c.process.exitcode != 0), key=lambda c: not c.unasked)  # fmt: skip
    if failed:
        raise exited_error(failed[0], len(failed))


def start_workers(
    cfg: WorkerConfig,
    open_store: Callable[[], feast.FeatureStore],
    processes: int,
    *,
    on_start: OnStart | None = None,
    on_stop: OnStop | None = None,
) -> list[Child]:
    """Fork ``processes`` workers of ``cfg.group_id``; call from a thread-free process."""
    if processes < 1:
        raise ValueError("processes must be >= 1")
    # Once here, so that N children do not all rewrite the registry on a new half-life.
    record_half_life(open_store(), cfg)
    ctx, parent = mp.get_context("fork"), os.getpid()
    children: list[Child] = []
    try:
        for i in range(processes):
            args = (i, processes, child_config(cfg, i), open_store, parent, on_start, on_stop)
            process = ctx.Process(target=_child_main, args=args, name=f"stream-worker-{i + 1}")
            process.start()
            children.append(Child(i, processes, process))
    except BaseException:  # e.g. fork failed for lack of memory: no half-started group
        stop_workers(children)
        raise
    return children


def supervise(children: list[Child], stop: threading.Event, poll_s: float = 0.2) -> list[Child]:
    """Wait until ``stop`` is set (→ []) or children exit (→ those, reaped)."""
    while not stop.is_set():
        ended = wait([c.process.sentinel for c in children], timeout=poll_s)
        if ended:
            gone = [c for c in children if c.process.sentinel in ended]
            for c in gone:  # its sentinel closes just before it can be reaped
                c.process.join()
            return gone
    return []


def stop_workers(children: list[Child], grace_s: float = GRACE_S) -> None:
    """SIGTERM every live child, wait up to ``grace_s`` in all, then SIGKILL the rest."""
    for c in children:
        if c.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for c in children:
        c.process.join(max(0.0, deadline - time.monotonic()))
        if c.process.exitcode is None:
            log.warning("%s did not stop within %.0fs: killing it", c.name, grace_s)
            c.process.kill()
            c.process.join()


def exited_error(child: Child, failed: int) -> WorkerExited:
    """The one line naming how ``child`` ended (``failed``: how many did not end cleanly)."""
    code, exit_code = child.process.exitcode or 0, EXIT_FAILED
    if code < 0:
        how = f"was killed by {_signal_name(-code)}"
    elif code == 0:  # a worker runs until it is stopped: this one was not
        how = "exited on its own"
    else:
        how, exit_code = f"exited with code {code}", code if code in (EXIT_FAILED, EXIT_USAGE) else EXIT_FAILED  # fmt: skip
        how += " (its error is logged above)" if child.unasked else ""
    when = "" if child.unasked else " while stopping"
    others = f"; {failed - 1} more did not end cleanly" if failed > 1 else ""
    return WorkerExited(
        f"{child.name} {how}{when}; the other workers were stopped{others}", exit_code
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _child_main(
    index: int,
    of: int,
    cfg: WorkerConfig,
    open_store: Callable[[], feast.FeatureStore],
    parent: int,
    on_start: OnStart | None,
    on_stop: OnStop | None,
) -> None:
    """A forked worker: its own signals, stores and log tag; exit code as the CLI's."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _die_with(parent)
    _tag_logs(f"worker {index + 1}/{of}")
    try:
        stats = run_worker(
            cfg,
            open_store(),
            stop,
            on_start=None if on_start is None else lambda port: on_start(index, cfg, port),
        )
    except TowerlineError as exc:  # one line, as the CLI prints it; the supervisor names us
        log.error("%s", " ".join(str(exc).split()))
        raise SystemExit(exc.exit_code) from None
    if on_stop is not None:
        on_stop(index, stats)


def _die_with(parent: int) -> None:
    """Get SIGTERM when the supervisor dies, even by SIGKILL (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _tag_logs(tag: str) -> None:
    """Tag this process's log lines (in the logger-name field): N workers share a terminal."""

    def tagged(record: logging.LogRecord) -> bool:
        if not record.name.startswith(tag):  # once, whatever the number of handlers
            record.name = f"{tag} {record.name}"
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tagged)
