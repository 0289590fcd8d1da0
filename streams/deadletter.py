"""Send rejected records to the dead-letter topic, and know that they arrived.

The value is the original bytes, the key the original key, the headers the original
headers followed by ``dlq.*`` ones with the reason and the origin (topic, partition,
offset), so a consumer of the dead-letter topic can replay or inspect a record without a
second schema. A record dead-lettered twice keeps both sets of ``dlq.*`` headers;
``read_headers`` returns the last (newest) value of each. ``send`` waits for every
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
    """The record's own headers, then ``dlq.*`` headers describing why and where from.

    kafka-python sends only bytes header values: a null one (legal on the wire) goes as b"".
    """
    fields = {
        "code": rejected.code,
        "reason": rejected.reason,
        "topic": rejected.topic,
        "partition": str(rejected.partition),
        "offset": str(rejected.offset),
        "worker": worker,
    }
    ours = [(HEADER_PREFIX + name, value.encode()) for name, value in fields.items()]
    theirs = [(name, b"" if value is None else value) for name, value in rejected.headers]
    return theirs + ours


def read_headers(record_headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The ``dlq.*`` headers: ``{"code": ..., "reason": ..., "offset": ...}``, last one wins."""
    return {
        name[len(HEADER_PREFIX) :]: value.decode(errors="replace")
        for name, value in record_headers
        if name.startswith(HEADER_PREFIX) and value is not None
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
                    self.topic, key=r.key, value=_value(r), headers=headers(r, self.worker)
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


def _value(rejected: Rejected) -> bytes | None:
    # A record with neither key nor value is legal on the wire, but kafka-python refuses
    # to send one: it goes with an empty value rather than stopping the worker.
    if rejected.key is None and rejected.value is None:
        return b""
    return rejected.value
