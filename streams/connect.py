"""Open the worker's Kafka clients, failing fast and in one line when no broker answers.

kafka-python retries the bootstrap until ``bootstrap_timeout_ms`` and logs every refused
connection at WARNING/ERROR on the way; the caller gets one ``UnavailableError`` naming
the address instead. Once connected, kafka-python's own logging is left alone: during a
run its reconnect messages are the only trace of a broker outage.
"""

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from kafka.errors import KafkaError

from towerline.core.errors import UnavailableError

T = TypeVar("T")


def connect(client: Callable[..., T], timeout_ms: int, **kwargs) -> T:
    """``client(**kwargs)`` (they name ``bootstrap_servers``), or ``UnavailableError``."""
    bootstrap = kwargs["bootstrap_servers"]
    try:
        with _quiet("kafka"):
            return client(bootstrap_timeout_ms=timeout_ms, **kwargs)
    except KafkaError as exc:  # no broker answered: retrying would only hide a wrong address
        raise UnavailableError(
            f"cannot reach Kafka at {bootstrap} (no answer in {timeout_ms / 1000:g}s: {exc}). "
            "Is the broker running? Check --bootstrap-servers / TOWERLINE_BOOTSTRAP_SERVERS."
        ) from None


# Clients open on several threads at once (a worker's consumer, its dead-letter producer,
# other workers in one process): the first to enter quiets the logger and the last to leave
# restores it. Saving and restoring per call would let overlapping calls leave it quiet.
_QUIET_LOCK = threading.Lock()
_quiet_depth: dict[str, int] = {}
_quiet_saved: dict[str, int] = {}


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Raise the level of logger ``name`` (process-wide) to CRITICAL for the block."""
    logger = logging.getLogger(name)
    with _QUIET_LOCK:
        if not _quiet_depth.get(name):
            _quiet_saved[name] = logger.level
            logger.setLevel(logging.CRITICAL)
        _quiet_depth[name] = _quiet_depth.get(name, 0) + 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth[name] -= 1
            if not _quiet_depth[name]:
                logger.setLevel(_quiet_saved.pop(name))
