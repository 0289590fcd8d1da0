"""The worker against the real broker and the real Feast online store (SQLite and Redis)."""

import struct
import threading
import time
import urllib.request

import pytest
from kafka import KafkaConsumer, KafkaProducer
from stream_kit import (
    NAMESPACE,
    Ev,
    assert_online_matches,
    make_events,
    missing_event_ts,
    reference,
    trickle,
)

from schemas.codec import AvroCodec
from streams.deadletter import read_headers
from streams.runner import run_worker_in_thread
from streams.stores import open_state_store
from towerline.core.stream_progress import read_progress

pytestmark = pytest.mark.kafka
SEQ_LEN, HALF_LIFE_S = 8, 6 * 3600.0
CODEC = AvroCodec()


def now_ms() -> int:
    return int(time.time() * 1000)


def events_for(seed: int, n: int = 600) -> list[Ev]:
    return make_events(n, users=40, pins=30, now_ms=now_ms(), seed=seed, seq_len=SEQ_LEN)


def check(store, events: list[Ev]) -> None:
    assert_online_matches(store, reference(events, SEQ_LEN, HALF_LIFE_S * 1000))


def test_sequences_and_counts_match_the_reference(
    online: str, feast_store, worker_cfg, new_topic, produce
) -> None:
    topic, events = new_topic("eng"), events_for(seed=1)
    produce(topic, [e.encode(CODEC) for e in events])
    cfg = worker_cfg(topic, seq_len=SEQ_LEN, half_life_s=HALF_LIFE_S)
    with run_worker_in_thread(cfg, feast_store(online)) as worker:
        joined = worker.wait_assigned(timeout_s=60)
        assert joined is not None and worker.worker.assigned.is_set()
        assert worker.wait_applied(len(events), timeout_s=60), worker.stats
        stats = worker.stats
    assert stats.duplicates == len(events) - len({e.event_id for e in events}) > 0
    assert stats.dead_lettered == 0 and stats.conflicts == 0
    check(feast_store(online), events)


def bad_records() -> dict[str, bytes]:
    """Values that must be dead-lettered when keyed b"1", by their expected reason code."""
    future = Ev("future", 1, 1, "CLICK", now_ms() + 86_400_000).encode(CODEC)[1]
    missing = missing_event_ts()
    wrong_id = CODEC.encode("OffsiteConversion", {"event_id": "o", "user_id": 1, "pin_id": 2, "action": "SIGNUP", "event_ts": 0})  # fmt: skip
    valid = Ev("valid", 1, 3, "SAVE", now_ms()).encode(CODEC)[1]
    other_user = Ev("other-user", 2, 3, "SAVE", now_ms()).encode(CODEC)[1]
    return {
        "wire": b"\xde\xad\xbe\xef", "schema": wrong_id, "body": missing,
        "too_far_future": future, "unknown-id": struct.pack(">bI", 0, 99) + valid[5:],
        "trailing": valid + b"\x00garbage", "key_mismatch": other_user,
    }  # fmt: skip


EXPECTED_CODES = {"wire": "wire", "schema": "schema", "body": "body", "too_far_future": "too_far_future", "unknown-id": "schema", "trailing": "body", "key_mismatch": "key_mismatch"}  # fmt: skip


def send_with_headers(bootstrap: str, topic: str, records: list[tuple]) -> None:
    """Send (key, value, headers) records, acknowledged one by one in order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v, headers=h) for k, v, h in records]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=10)
    finally:
        producer.close(timeout=5)


def test_bad_records_are_dead_lettered_with_reasons_while_good_ones_flow(
    feast_store, worker_cfg, new_topic, bootstrap, consume_all, redis_client
) -> None:
    topic, dlq, events = new_topic("eng"), new_topic("dlq"), events_for(seed=2, n=300)
    bad = bad_records()
    good = [(*e.encode(CODEC), [("source", b"test")]) for e in events]
    traced = [(b"1", v, [("trace", name.encode()), ("source", b"test")]) for name, v in bad.items()]  # fmt: skip
    mixed = good[:100] + traced + good[100:]
    send_with_headers(bootstrap, topic, mixed)
    cfg = worker_cfg(topic, dead_letter_topic=dlq, seq_len=SEQ_LEN, half_life_s=HALF_LIFE_S, metrics_port=0)  # fmt: skip
    with run_worker_in_thread(cfg, feast_store("redis")) as worker:
        assert worker.wait_applied(len(mixed), timeout_s=60), worker.stats
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics").read().decode()  # fmt: skip
    check(feast_store("redis"), events)  # nothing of the bad records was applied
    letters = {r.value: (r, read_headers(r.headers)) for r in consume_all(dlq, len(bad))}
    assert {name: letters[value][1]["code"] for name, value in bad.items()} == EXPECTED_CODES
    for name, (record, head) in ((n, letters[v]) for n, v in bad.items()):
        assert record.key == b"1" and head["topic"] == topic and head["reason"]
        # the record's own headers first, unchanged; then the dlq.* ones
        assert record.headers[:2] == [("trace", name.encode()), ("source", b"test")], name
        assert all(h.startswith("dlq.") for h, _ in record.headers[2:]), name
    by_offset = sorted(letters, key=lambda v: int(letters[v][1]["offset"]))
    assert by_offset == list(bad.values())  # one partition (same key), produce order
    assert "is OffsiteConversion, not Engagement" in letters[bad["schema"]][1]["reason"]
    assert "unknown schema id 99" in letters[bad["unknown-id"]][1]["reason"]
    assert "8 trailing bytes" in letters[bad["trailing"]][1]["reason"]
    assert "key b'1' is not the user_id b'2'" in letters[bad["key_mismatch"]][1]["reason"]
    for line in (
        'towerline_stream_records_dead_lettered_total{reason="wire"} 1.0',
        'towerline_stream_records_dead_lettered_total{reason="schema"} 2.0',
        'towerline_stream_records_dead_lettered_total{reason="body"} 2.0',
        'towerline_stream_records_dead_lettered_total{reason="key_mismatch"} 1.0',
        'towerline_stream_records_dead_lettered_total{reason="too_far_future"} 1.0',
        f"towerline_stream_records_applied_total {float(len({e.event_id for e in events}))}",
        "towerline_stream_freshness_seconds_bucket",
        f'towerline_stream_event_time_lag_seconds{{partition="0",topic="{topic}"}}',
        "towerline_stream_batch_seconds_count",
    ):
        assert line in metrics, line


def test_two_workers_split_the_partitions_and_the_merged_state_matches(
    online: str, feast_store, worker_cfg, new_topic, produce
) -> None:
    topic, events = new_topic("eng"), events_for(seed=3, n=1500)
    cfg = worker_cfg(topic, seq_len=SEQ_LEN, half_life_s=HALF_LIFE_S, max_poll_records=50)
    with run_worker_in_thread(cfg, feast_store(online)) as a, run_worker_in_thread(cfg, feast_store(online)) as b:  # fmt: skip
        assigned = lambda w: set(w.worker._applied) | set(w.worker._resync)  # noqa: E731
        deadline = time.monotonic() + 30
        while not (assigned(a) and assigned(b) and len(assigned(a) | assigned(b)) == 4):
            assert time.monotonic() < deadline, "the group never split the partitions"
            time.sleep(0.05)
        assert not assigned(a) & assigned(b)
        produce(topic, [e.encode(CODEC) for e in events])
        handled = lambda: sum(w.stats.applied + w.stats.duplicates for w in (a, b))  # noqa: E731
        deadline = time.monotonic() + 60
        while handled() < len(events):
            assert time.monotonic() < deadline, (a.stats, b.stats)
            time.sleep(0.05)
        assert a.stats.applied > 0 and b.stats.applied > 0
    check(feast_store(online), events)


def test_workers_joining_and_leaving_mid_stream_lose_and_double_nothing(
    feast_store, worker_cfg, new_topic, bootstrap, redis_client
) -> None:
    """Rebalances while events flow and batches are in flight: every event counts once."""
    topic, events = new_topic("eng"), events_for(seed=6, n=6000)
    store = feast_store("redis")
    state = open_state_store(store, NAMESPACE, HALF_LIFE_S * 1000)
    applied = lambda: sum(a + 1 for a in state.applied(topic, range(4)).values())  # noqa: E731
    cfg = worker_cfg(topic, seq_len=SEQ_LEN, half_life_s=HALF_LIFE_S, max_poll_records=25)
    stream = threading.Thread(target=trickle, args=(bootstrap, topic, events, 12.0), daemon=True)
    with run_worker_in_thread(cfg, feast_store("redis")) as a:
        stream.start()
        assert a.wait_until(lambda s: s.applied > 0, 30)
        with run_worker_in_thread(cfg, feast_store("redis")) as b:  # joins: a rebalance
            assert b.wait_until(lambda s: s.applied > 0, 30), "b never got a partition"
            a.stop()  # leaves mid-stream: another rebalance, b takes everything
            assert a.stats.applied > 0 and b.wait_until(lambda _: applied() >= len(events), 60)
    stream.join()
    check(store, events)
    state.close()


def test_a_restart_resumes_from_the_state_store_not_from_kafka(
    online: str, feast_store, worker_cfg, new_topic, produce, monkeypatch, bootstrap
) -> None:
    """The first worker never commits to Kafka (as if killed right after each state write)."""
    topic, events = new_topic("eng"), events_for(seed=4, n=1200)
    produce(topic, [e.encode(CODEC) for e in events])
    cfg = worker_cfg(topic, group="restart", seq_len=SEQ_LEN, half_life_s=HALF_LIFE_S, max_poll_records=40)  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(KafkaConsumer, "commit_async", lambda *a, **k: None)
        with run_worker_in_thread(cfg, feast_store(online)) as first:
            assert first.wait_until(lambda s: s.consumed >= len(events) // 3, timeout_s=60)
        done_first = first.stats.consumed
    assert done_first < len(events)
    with run_worker_in_thread(cfg, feast_store(online)) as second:
        assert second.wait_until(lambda s: s.consumed >= len(events) - done_first, timeout_s=60)
        time.sleep(0.5)  # anything more would be a double count
        assert second.stats.consumed == len(events) - done_first, second.stats
    check(feast_store(online), events)


def test_progress_per_partition_is_readable_from_outside_the_worker(
    online: str, feast_store, worker_cfg, new_topic, produce, consume_all
) -> None:
    topic, events = new_topic("eng"), events_for(seed=5, n=300)
    started = now_ms()
    produce(topic, [e.encode(CODEC) for e in events])
    records = consume_all(topic, len(events))
    partition_of = {int(r.key): r.partition for r in records}
    want: dict[int, tuple[int, int]] = {}  # partition -> (last offset, newest event time)
    for r in records:
        last, newest = want.get(r.partition, (-1, -1))
        want[r.partition] = (max(last, r.offset), newest)
    for e in events:
        last, newest = want[partition_of[e.user_id]]
        want[partition_of[e.user_id]] = (last, max(newest, e.ts_ms))
    cfg = worker_cfg(topic, seq_len=SEQ_LEN, half_life_s=HALF_LIFE_S)
    with run_worker_in_thread(cfg, feast_store(online)) as worker:
        assert worker.wait_applied(len(events), timeout_s=60), worker.stats
    got = read_progress(feast_store(online), NAMESPACE, topic)
    assert {p.partition: (p.applied, p.newest_event_ms) for p in got} == want
    assert all(started <= p.committed_ms <= now_ms() for p in got)
