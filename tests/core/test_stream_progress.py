"""Reading stream progress from outside the worker: names, stores nothing ran on, end offsets.

What the worker writes (and that a conflict writes nothing) is tested with the state stores
in ``tests/streams/test_state_store.py`` and ``test_worker.py``; here the readers' own cases.
"""

import socket
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from towerline.core.errors import UnavailableError
from towerline.core.featurestore import apply_repo, open_store
from towerline.core.stream_progress import (
    StateNames,
    end_offsets,
    high_watermarks,
    partition_field,
    read_progress,
    state_namespace,
)


def test_every_name_derives_from_the_namespace_and_the_project() -> None:
    names = StateNames(state_namespace("towerline:streams", "my-proj"))
    assert names.redis_offsets == "towerline:streams:my-proj:offsets"
    assert names.redis_progress == "towerline:streams:my-proj:progress"
    assert names.redis_user_field == "towerline:streams:my-proj:seq"
    assert names.redis_pin_field == "towerline:streams:my-proj:decay"
    assert names.redis_layout == "towerline:streams:my-proj:layout"
    assert names.sqlite_table("progress") == '"towerline_streams_my_proj_progress"'
    assert partition_field("engagements", 3) == "engagements:3"


def test_a_store_no_worker_wrote_has_no_progress(tmp_path: Path) -> None:
    store = open_store(online="sqlite", project="tl_progress", data_dir=tmp_path / "feast")
    assert read_progress(store, "towerline:streams", "engagements") == []  # no file yet
    apply_repo(store)
    assert read_progress(store, "towerline:streams", "engagements") == []  # no state tables


def test_a_redis_that_does_not_answer_is_unavailable(tmp_path: Path) -> None:
    store = open_store(online="redis", redis_url=f"127.0.0.1:{_free_port()}", data_dir=tmp_path)
    with pytest.raises(UnavailableError, match="cannot read stream progress from Redis at 127.0.0.1"):  # fmt: skip
        read_progress(store, "towerline:streams", "engagements")


@pytest.mark.kafka
def test_end_offsets_count_records_sent_one_batch_each(bootstrap: str, new_topic) -> None:
    topic = new_topic("ends", partitions=3)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for _ in range(5):  # one batch per record: the dev broker's end offset is exact then
            producer.send(topic, value=b"x", partition=0).get(timeout=10)
        producer.send(topic, value=b"y", partition=2).get(timeout=10)
    finally:
        producer.close(timeout=5)
    assert end_offsets(bootstrap, topic, timeout_s=10) == {0: 5, 1: 0, 2: 1}


@pytest.mark.kafka
def test_the_dev_broker_undercounts_a_multi_record_batch(bootstrap: str, new_topic) -> None:
    """What the docstring warns about: the end is the last batch's base offset + 1."""
    topic = new_topic("ends", partitions=1)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=200)
    try:
        futures = [producer.send(topic, value=b"z", partition=0) for _ in range(10)]
        producer.flush(10)
        assert {f.get(timeout=10).offset for f in futures} == set(range(10))
    finally:
        producer.close(timeout=5)
    assert 1 <= end_offsets(bootstrap, topic, timeout_s=10)[0] <= 10


@pytest.mark.kafka
def test_a_missing_topic_or_broker_is_unavailable(bootstrap: str) -> None:
    with pytest.raises(UnavailableError, match="does not exist"):
        end_offsets(bootstrap, f"no-such-{uuid.uuid4().hex[:8]}", timeout_s=5)
    with pytest.raises(UnavailableError, match="cannot reach Kafka"):
        end_offsets(f"127.0.0.1:{_free_port()}", "engagements", timeout_s=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.kafka
def test_high_watermarks_are_exact_where_the_end_offset_undercounts(bootstrap: str, new_topic) -> None:  # fmt: skip
    topic = new_topic("ends", partitions=2)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=200)
    try:
        futures = [producer.send(topic, value=b"z", partition=0) for _ in range(10)]
        producer.flush(10)
        producer.send(topic, value=b"z", partition=0).get(timeout=10)  # a batch of its own
        assert {f.get(timeout=10).offset for f in futures} == set(range(10))
    finally:
        producer.close(timeout=5)
    assert high_watermarks(bootstrap, topic, timeout_s=10) == {0: 11, 1: 0}
