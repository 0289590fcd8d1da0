"""A topic holding fewer records than were applied from it stops the worker, with what to do.

Against the real broker: a second Tansu broker plays "the dev broker was restarted" (same
topic name, no data), and the no-false-positive case uses Tansu's own undercount (its
ListOffsets end counts a 200-record batch as one record).
"""

import time
from pathlib import Path
from types import SimpleNamespace

from kafka import KafkaProducer
from stream_kit import NAMESPACE, Ev

from schemas.codec import AvroCodec
from streams.resets import (
    GONE,
    OK,
    RESET,
    Behind,
    OffsetProbe,
    TopicResetError,
    empty_fetch_is_reset,
    first_record_verdict,
    reset_error,
)
from streams.runner import run_worker_in_thread
from streams.state import NO_OFFSET
from streams.stores import open_state_store
from streams.update import BatchUpdate, OffsetMove
from towerline import devbroker
from towerline.core.errors import EXIT_FAILED

CODEC = AvroCodec()


# -- the rule, in isolation -----------------------------------------------------------------


def test_first_record_verdicts() -> None:
    assert first_record_verdict(7, 7) == OK  # record A is there: the log is that long
    assert first_record_verdict(7, 0) == RESET  # the broker moved us back: it ends before A
    assert first_record_verdict(7, 9) == GONE  # A was deleted (retention): not a reset
    assert empty_fetch_is_reset(7, 0) and empty_fetch_is_reset(7, 7)
    assert not empty_fetch_is_reset(7, 8) and not empty_fetch_is_reset(7, None)


def rec(offset: int) -> SimpleNamespace:
    return SimpleNamespace(offset=offset)


def test_the_probe_seeks_to_the_applied_offset_once_and_drops_that_record() -> None:
    probe = OffsetProbe()
    probe.assigned([0, 1, 2], highwater=lambda p: 5 if p == 2 else None)  # 2: state kept
    assert (probe.seek_offset(0, 9), probe.seek_offset(1, 4), probe.seek_offset(2, 3)) == (9, 4, 4)
    batch, behind = probe.records(0, [rec(9), rec(10)], highwater=lambda p: 11)
    assert [r.offset for r in batch] == [10] and behind is None
    assert probe.seek_offset(0, 10) == 11  # checked once: later resyncs seek past applied
    assert probe.silent(lambda p: {1: 4}[p]) == {1: Behind(1, 4, 4)}
    assert probe.records(1, [rec(0)], highwater=lambda p: 1) == ([], Behind(1, 4, 1))


def test_the_message_names_partitions_namespace_and_both_ways_on() -> None:
    err = reset_error(
        "engagements", {3: Behind(3, 41, 0), 1: Behind(1, 9, None)}, "ns", "HDEL x 'e:1'"
    )
    assert err.exit_code == EXIT_FAILED
    text = str(err)
    assert text.index("partition 1") < text.index("partition 3")
    for needle in ("applied up to offset 41, but the log ends at offset 0", "ends before it",
                   "'ns'", "--state-namespace", "HDEL x 'e:1'", "recreated"):  # fmt: skip
        assert needle in text, needle


# -- against the real broker ------------------------------------------------------------------


def events(user: int, n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    now = int(time.time() * 1000)
    return [Ev(f"u{user}-{i}", user, i % 7, "CLICK", now - i).encode(CODEC) for i in range(start, start + n)]  # fmt: skip


def send_as_one_batch(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """One producer batch per partition (a long linger): Tansu's end offset undercounts it."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=500, batch_size=1 << 20)
    futures = [producer.send(topic, key=k, value=v) for k, v in records]
    producer.flush(30)
    for f in futures:
        f.get(10)
    producer.close(5)


def died_with(handle, timeout_s: float = 40) -> BaseException:
    handle.thread.join(timeout_s)
    assert not handle.thread.is_alive(), f"the worker kept running: {handle.stats}"
    [error] = handle.errors
    return error


def test_a_worker_on_a_new_broker_stops_instead_of_skipping_everything(
    tmp_path: Path, feast_store, worker_cfg, new_topic, bootstrap, produce
) -> None:
    """The issue's case: the dev broker restarted (empty), same topic, same state namespace."""
    topic = new_topic("eng")
    produce(topic, events(user=5, n=30))
    store = feast_store("sqlite")
    with run_worker_in_thread(worker_cfg(topic), store) as worker:
        assert worker.wait_applied(30, timeout_s=60), worker.stats
    info = devbroker.start(tmp_path / "second-broker", partitions=4, topics=[topic])
    try:
        cfg = worker_cfg(topic, bootstrap=info.bootstrap)
        with run_worker_in_thread(cfg, feast_store("sqlite")) as restarted:
            error = died_with(restarted)
    finally:
        devbroker.stop(tmp_path / "second-broker")
    assert isinstance(error, TopicResetError), repr(error)
    text = str(error)
    partition = int(text.split("partition ")[1].split(":")[0])  # user 5's partition
    assert "applied up to offset 29, but the log ends at offset 0" in text
    assert f"'{NAMESPACE}'" in text and "--state-namespace" in text
    assert f"'{topic}:{partition}'" in text and "DELETE FROM" in text  # the SQLite way to reset


def test_a_recreated_topic_with_fewer_records_is_noticed(
    feast_store, worker_cfg, new_topic, bootstrap, redis_client
) -> None:
    """Stored offsets 50 on every partition, 2-3 records in each: records are below them."""
    topic, store = new_topic("eng"), feast_store("redis")
    state = open_state_store(store, NAMESPACE, 3_600_000.0)
    moves = {p: OffsetMove(NO_OFFSET, 50) for p in range(4)}
    assert state.commit(topic, BatchUpdate(offsets=moves)) is None
    state.close()
    send_as_one_batch(bootstrap, topic, [r for u in range(8) for r in events(u, 1)])
    with run_worker_in_thread(worker_cfg(topic), store) as worker:
        error = died_with(worker)
    assert isinstance(error, TopicResetError), repr(error)
    assert str(error).count("applied up to offset 50") == 4, str(error)
    assert "redis-cli -h 127.0.0.1 -p 6379 HDEL" in str(error)
    assert worker.stats.applied == 0


def test_no_false_alarm_when_tansu_undercounts_the_end_offset(
    online: str, feast_store, worker_cfg, new_topic, bootstrap
) -> None:
    """A restart whose applied offset lies inside the last, many-record batch goes on."""
    topic = new_topic("eng")
    send_as_one_batch(bootstrap, topic, events(user=3, n=200))
    with run_worker_in_thread(worker_cfg(topic), feast_store(online)) as first:
        assert first.wait_applied(200, timeout_s=60), first.stats
    with run_worker_in_thread(worker_cfg(topic), feast_store(online)) as second:
        time.sleep(5)  # joined, sought to offset 199 (reported end: 1), probed
        assert second.thread.is_alive() and not second.errors, second.errors
        send_as_one_batch(bootstrap, topic, events(user=3, n=10, start=200))
        assert second.wait_applied(10, timeout_s=30), second.stats
        time.sleep(0.5)
        assert (second.stats.consumed, second.stats.applied) == (10, 10), second.stats
