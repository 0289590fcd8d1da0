"""Open the worker's Kafka clients, failing fast and in one line when no broker answers.

kafka-python retries the bootstrap until ``bootstrap_timeout_ms`` and logs every refused
connection at WARNING/ERROR on the way; the caller gets one ``UnavailableError`` naming
the address instead. Once connected, kafka-python's own logging is left alone: during a
run its reconnect messages are the only trace of a broker outage.
"""

import contextlib
import logging
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


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Raise the level of logger ``name`` (process-wide) to CRITICAL for the block."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)
