"""Shared fixtures: one real Tansu broker on loopback per test session, and Kafka helpers.

The broker runs in a temporary run directory, is stopped by its PID at the end of the
session, and its absence is a failure, not a skip: the Kafka tests are the proof that
the streaming path works.
"""

import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from towerline import devbroker

# Tansu holds a group join for about half the session timeout: keep both short in tests.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
_topic_ids = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _interruptible() -> Iterator[None]:
    """A suite started in the background of a non-interactive shell (``make test &`` in a
    script) inherits SIGINT ignored, and so would every CLI it starts (an ignored signal
    survives exec): the interrupt tests need the disposition a terminal gives."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session", autouse=True)
def _ledger_outside_the_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Batch steps run by tests (in process or as children) record their runs in a temporary
    ledger, never in the repository's .towerline/. Session-wide, so session fixtures that
    run steps are covered too; a test wanting its own ledger sets TOWERLINE_LEDGER."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWERLINE_LEDGER", str(tmp_path_factory.mktemp("ledger") / "ledger.jsonl"))
        yield


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devbroker.BrokerInfo]:
    """A running dev broker (default topics, 4 partitions each) for the whole session."""
    run_dir = tmp_path_factory.mktemp("broker-run")
    try:
        info = devbroker.start(run_dir, partitions=4)
    except devbroker.BrokerError as exc:
        pytest.fail(f"the dev broker did not start: {exc}", pytrace=False)
    try:
        yield info
    finally:
        devbroker.stop(run_dir)


@pytest.fixture
def bootstrap(kafka_broker: devbroker.BrokerInfo) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def new_topic(bootstrap: str) -> Callable[..., str]:
    """Factory of fresh topics with unique names, so tests never see each other's records."""

    def make(prefix: str = "t", partitions: int = 4) -> str:
        name = f"{prefix}-{os.getpid()}-{next(_topic_ids)}-{time.monotonic_ns() % 10**6}"
        devbroker.create_topics(bootstrap, [name], partitions)
        return name

    return make


@pytest.fixture
def produce(bootstrap: str) -> Callable[[str, Sequence[tuple[bytes | None, bytes]]], None]:
    """Send (key, value) pairs to a topic and wait until every one is acknowledged."""

    def send_all(topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        try:
            futures = [producer.send(topic, key=k, value=v) for k, v in messages]
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=10)  # raises if a send failed
        finally:
            producer.close(timeout=5)

    return send_all


@pytest.fixture
def consume_all(bootstrap: str) -> Callable[..., list[ConsumerRecord]]:
    """Read ``n`` records of a topic from the beginning, without a consumer group.

    Counts records rather than waiting on end offsets: Tansu under-reports those.
    """

    def read(topic: str, n: int, timeout_s: float = 20.0) -> list[ConsumerRecord]:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
            consumer.seek_to_beginning()
            return _poll_until(consumer, n, timeout_s)
        finally:
            consumer.close()

    return read


@pytest.fixture
def poll_until() -> Callable[[KafkaConsumer, int, float], list[ConsumerRecord]]:
    """``poll_until(consumer, n, timeout_s)``: poll until ``n`` records arrived."""
    return _poll_until


def _poll_until(consumer: KafkaConsumer, n: int, timeout_s: float) -> list[ConsumerRecord]:
    """Poll until ``n`` records arrived (fails the test on timeout)."""
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"got {len(records)} of {n} records in {timeout_s}s")
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


@pytest.fixture
def fast_group() -> dict[str, int]:
    """Consumer-group timeouts that keep Tansu's join wait (~half the session) short."""
    return dict(FAST_GROUP)
