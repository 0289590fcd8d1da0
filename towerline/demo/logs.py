"""Where library output goes during the demo: a log file, and the terminal only with
--verbose.

Beam, Feast, kafka-python and torch log warnings and errors that say nothing to someone
watching the demo (Beam's option parsing, a refused connection while the broker starts).
They are kept, in ``WORKDIR/towerline.log``, not dropped. Python logging and warnings are
routed there by replacing the root handlers; Beam's worker processes write to the file
descriptors they inherit, so stdout and stderr are also pointed at the log file at the
descriptor level for the duration, and the demo's own console writes to a duplicate of
the terminal taken before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

LOG_NAME = "towerline.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def library_logs(path: Path, *, verbose: bool = False) -> Iterator[TextIO]:
    """Send library logs, warnings and stray output to ``path`` for the block.

    Yields the stream the demo's console should print to (the terminal's stdout). With
    ``verbose`` the descriptors are left alone and logs go to the terminal (stderr) too.
    """
    log = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed below
    handlers = [logging.StreamHandler(log)]
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    try:
        with _root_handlers(handlers, logging.INFO), _captured_warnings():
            if verbose:
                yield sys.stdout
            else:
                with _descriptors_to(log) as terminal:
                    yield terminal
    finally:
        log.close()


@contextlib.contextmanager
def _root_handlers(handlers: list[logging.Handler], level: int) -> Iterator[None]:
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_FORMAT))
    root.handlers[:] = handlers
    root.setLevel(level)
    try:
        yield
    finally:
        root.handlers[:] = saved
        root.setLevel(saved_level)


@contextlib.contextmanager
def _captured_warnings() -> Iterator[None]:
    # Feast and Beam reset the warning filters on import; as log records, warnings reach
    # the handlers above whatever the filters say about printing them.
    # Undone afterwards only if it was off before (the CLI turns it on for good).
    was_on = warnings.showwarning is getattr(logging, "_showwarning", None)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        if not was_on:
            logging.captureWarnings(False)


@contextlib.contextmanager
def _descriptors_to(log: TextIO) -> Iterator[TextIO]:
    """Point fds 1 and 2, and ``sys.stdout``/``sys.stderr`` (which a host such as pytest
    may have replaced), at ``log``; yield a text stream on the original stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[1]), "w", encoding="utf-8", buffering=1)
    try:
        for fd in saved:
            os.dup2(log.fileno(), fd)
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        terminal.close()
