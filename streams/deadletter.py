"""Send rejected records to the dead-letter topic, and know that they arrived.

The value is the original bytes, the key the original key; the reason and the origin
(topic, partition, offset) travel in headers, so a consumer of the dead-letter topic can
replay or inspect a record without a second schema. ``send`` waits for every
acknowledgement: the worker advances its applied offset past a bad record only once the
record is safely in the dead-letter topic (never dropped silently).
"""

from collections.abc import Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError

from streams.events import Rejected
from towerline.core.errors import TowerlineError

FLUSH_TIMEOUT_S = 30.0
HEADER_PREFIX = "dlq."


class DeadLetterError(TowerlineError):
    """Some rejected records were not acknowledged by the dead-letter topic."""


def headers(rejected: Rejected, worker: str) -> list[tuple[str, bytes]]:
    """Kafka headers describing why and where from."""
    fields = {
        "code": rejected.code,
        "reason": rejected.reason,
        "topic": rejected.topic,
        "partition": str(rejected.partition),
        "offset": str(rejected.offset),
        "worker": worker,
    }
    return [(HEADER_PREFIX + name, value.encode()) for name, value in fields.items()]


def read_headers(record_headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Inverse of ``headers``: ``{"code": ..., "reason": ..., "offset": ...}``."""
    return {
        name[len(HEADER_PREFIX) :]: value.decode()
        for name, value in record_headers
        if name.startswith(HEADER_PREFIX)
    }


class DeadLetters:
    """The dead-letter output of one worker."""

    def __init__(self, producer: KafkaProducer, topic: str, worker: str) -> None:
        self.producer, self.topic, self.worker = producer, topic, worker

    def send(self, rejected: Sequence[Rejected]) -> None:
        """Send every record and wait for all acknowledgements; raise if any failed."""
        try:
            futures = [
                self.producer.send(
                    self.topic, key=r.key, value=r.value, headers=headers(r, self.worker)
                )
                for r in rejected
            ]
            self.producer.flush(timeout=FLUSH_TIMEOUT_S)
            for future in futures:
                future.get(timeout=FLUSH_TIMEOUT_S)  # raises the send's error, if any
        except KafkaError as exc:
            raise DeadLetterError(f"dead letters not delivered to {self.topic}: {exc!r}") from exc

    def close(self) -> None:
        self.producer.close(timeout=5)
