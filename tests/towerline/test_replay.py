"""Replaying a lake partition to Kafka: complete, decodable, keyed, ordered, rate-limited,
and every undelivered record counted."""

import datetime as dt
import random
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from schemas.arrow import ENGAGEMENT
from schemas.codec import AvroCodec
from schemas.errors import LakeError
from towerline import replay
from towerline.replay import ReplayError, TokenBucket, replay_partition

DAY = "2024-05-01"
T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def write_lake(root: Path, n: int, users: int = 13, seed: int = 7) -> list[dict]:
    """A one-file engagements partition with rows in random (not event-time) order."""
    rng = random.Random(seed)
    rows = [
        {
            "event_id": f"ev-{i}",
            "user_id": i % users,
            "pin_id": rng.randrange(10_000),
            "action": rng.choice(["CLOSEUP", "CLICK", "SAVE", "SHARE"]),
            "event_ts": T0 + dt.timedelta(seconds=i, milliseconds=rng.randrange(1000)),
        }
        for i in range(n)
    ]
    rng.shuffle(rows)
    part = root / "engagements" / f"dt={DAY}"
    part.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ENGAGEMENT), part / "part-0.parquet")
    return rows


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_token_bucket_holds_the_rate_with_a_fake_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(500, burst=10, clock=clock, sleep=clock.sleep)
    for _ in range(1010):
        bucket.acquire()
    assert clock.slept == pytest.approx((1010 - 10) / 500, rel=1e-6)


@pytest.mark.kafka
def test_replay_arrives_complete_decodable_and_keyed(
    tmp_path, bootstrap, new_topic, consume_all
) -> None:
    rows = write_lake(tmp_path, 300)
    topic = new_topic("replay")

    result = replay_partition(tmp_path, DAY, bootstrap, topic=topic, progress=False)

    assert (result.sent, result.failed, result.topic) == (300, 0, topic)
    assert result.first_event_ts == min(r["event_ts"] for r in rows)
    assert result.last_event_ts == max(r["event_ts"] for r in rows)
    codec = AvroCodec()
    by_partition: dict[int, list[dict]] = defaultdict(list)
    for message in sorted(consume_all(topic, 300), key=lambda m: (m.partition, m.offset)):
        _, record = codec.decode(message.value, expected_subject="Engagement")
        assert message.key == str(record["user_id"]).encode()
        by_partition[message.partition].append(record)
    got = sorted((r for rs in by_partition.values() for r in rs), key=lambda r: r["event_id"])
    assert got == sorted(rows, key=lambda r: r["event_id"])
    for records in by_partition.values():  # sent in event-time order, so stored in it too
        stamps = [r["event_ts"] for r in records]
        assert stamps == sorted(stamps)


@pytest.mark.kafka
def test_replay_honours_the_rate(tmp_path, bootstrap, new_topic, consume_all) -> None:
    write_lake(tmp_path, 200)
    topic = new_topic("rate")
    clock = FakeClock()

    result = replay_partition(
        tmp_path, DAY, bootstrap, topic=topic, rate=100, progress=False,
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip

    burst = TokenBucket(100).capacity
    assert result.sent == 200
    assert result.seconds == pytest.approx((200 - burst) / 100, abs=0.01)
    assert len(consume_all(topic, 200)) == 200


def test_every_undelivered_record_is_counted(tmp_path, monkeypatch) -> None:
    write_lake(tmp_path, 30)
    table = pq.read_table(tmp_path / "engagements" / f"dt={DAY}")
    bad = table.set_column(1, "user_id", pa.array([-1] * 30, pa.int64())).slice(0, 1)
    pq.write_table(bad.cast(ENGAGEMENT), tmp_path / "engagements" / f"dt={DAY}" / "bad.parquet")
    monkeypatch.setattr(replay, "KafkaProducer", FlakyProducer)
    monkeypatch.setattr(replay, "_check_reachable", lambda bootstrap: None)

    result = replay_partition(tmp_path, DAY, "unused:9092", progress=False)

    # 31 rows: 1 does not encode, 30 sent; of those the 2nd raises in send() and every
    # 5th fails through the errback.
    assert result.failed == 1 + 1 + 6
    assert result.sent == 31 - result.failed
    assert any("user_id" in e for e in result.errors)
    assert any("KafkaTimeoutError" in e for e in result.errors)


def test_unknown_table_is_refused(tmp_path) -> None:
    with pytest.raises(ReplayError, match="pins"):
        replay_partition(tmp_path, DAY, "unused:9092", table="pins", progress=False)


class FlakyProducer:
    """Stands in for KafkaProducer: acknowledges most sends, fails some in each way."""

    def __init__(self, **_config) -> None:
        self.calls = 0

    def send(self, topic: str, value: bytes, key: bytes) -> Future:
        self.calls += 1
        future = Future()
        if self.calls == 2:
            raise KafkaTimeoutError("no metadata for topic")
        if self.calls % 5 == 0:
            return future.failure(KafkaTimeoutError("batch expired"))
        return future.success(object())

    def flush(self, timeout: float | None = None) -> None:
        pass  # every future above is already resolved, as after a real flush()

    def close(self, timeout: float | None = None) -> None:
        pass


@pytest.mark.kafka
def test_restamp_replays_a_past_day_as_now_in_order(
    tmp_path, bootstrap, new_topic, consume_all
) -> None:
    write_lake(tmp_path, 200)
    topic = new_topic("restamp")
    before_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)

    result = replay_partition(tmp_path, DAY, bootstrap, topic=topic, progress=False, restamp=True)

    after_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    assert (result.sent, result.failed) == (200, 0)
    assert result.first_event_ts.date().isoformat() == DAY  # the lake's times are reported
    codec = AvroCodec()
    records = [
        codec.decode(m.value)[1]
        for m in sorted(consume_all(topic, 200), key=lambda m: (m.partition, m.offset))
    ]
    stamps = [int(r["event_ts"].timestamp() * 1000) for r in records]
    assert all(before_ms <= s <= after_ms for s in stamps)
    # Sent oldest first, so the new stamps follow the lake's event-time order.
    by_id = {r["event_id"]: s for r, s in zip(records, stamps, strict=True)}
    lake_order = sorted(write_lake_rows(tmp_path), key=lambda r: r["event_ts"])
    sent_stamps = [by_id[r["event_id"]] for r in lake_order]
    assert sent_stamps == sorted(sent_stamps)


def write_lake_rows(root: Path) -> list[dict]:
    return pq.read_table(root / "engagements" / f"dt={DAY}").to_pylist()


def test_restamp_never_goes_back_when_the_wall_clock_does() -> None:
    ticks = iter([5.0, 4.0, 6.0])
    stamp = replay._Restamper(lambda: next(ticks))
    records = [{"event_ts": 0} for _ in range(3)]
    for record in records:
        stamp(record)
    assert [r["event_ts"] for r in records] == [5000, 5000, 6000]


def _bad_partition(root: Path, **columns) -> None:
    part = root / "engagements" / f"dt={DAY}"
    part.mkdir(parents=True)
    base = {"event_id": ["e1"], "user_id": [1], "pin_id": [2], "action": ["CLICK"],
            "event_ts": pa.array([T0], pa.timestamp("ms", tz="UTC"))}  # fmt: skip
    table = pa.table({k: v for k, v in {**base, **columns}.items() if v is not None})
    pq.write_table(table, part / "part-0.parquet")


@pytest.mark.parametrize(
    ("columns", "needle"),
    [({"action": None}, "no column 'action'"),
     ({"user_id": ["u1"]}, "column 'user_id' is string, the engagements table needs int64")],
)  # fmt: skip
def test_a_partition_of_the_wrong_shape_is_refused_by_name(tmp_path, columns, needle) -> None:
    _bad_partition(tmp_path, **columns)
    with pytest.raises(LakeError, match=needle) as err:
        replay_partition(tmp_path, DAY, "unused:9092", progress=False)
    assert err.value.exit_code == 2 and f"dt={DAY}" in str(err.value)


def test_an_unreachable_broker_is_one_error_before_any_client_starts(tmp_path) -> None:
    write_lake(tmp_path, 3)
    with pytest.raises(ReplayError, match=r"cannot reach Kafka at 127\.0\.0\.1:1 .*refused"):
        replay_partition(tmp_path, DAY, "127.0.0.1:1", progress=False)


def test_a_failure_reason_is_never_just_a_class_name() -> None:
    from kafka.errors import RequestTimedOutError

    deliveries = replay._Deliveries()
    deliveries.fail(RequestTimedOutError())
    deliveries.fail(KafkaTimeoutError())
    deliveries.fail(RequestTimedOutError())
    timed_out, timeout = deliveries.reasons()
    assert timed_out.startswith("RequestTimedOutError x2: [Error 7] RequestTimedOutError: ")
    assert "exceeds the user-specified time limit" in timed_out
    assert timeout == "KafkaTimeoutError x1: KafkaTimeoutError"
    assert deliveries.failed == 3
