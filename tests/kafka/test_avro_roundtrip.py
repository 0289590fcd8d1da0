"""Avro records survive a trip through the real broker byte for byte."""

import datetime as dt

import pytest

from schemas.codec import AvroCodec

pytestmark = pytest.mark.kafka

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
ACTIONS = ("CLOSEUP", "CLICK", "SAVE", "SHARE")


def engagements(n: int) -> list[dict]:
    return [
        {
            "event_id": f"e-{i}",
            "user_id": i % 7,
            "pin_id": 1000 + i,
            "action": ACTIONS[i % 4],
            "event_ts": T0 + dt.timedelta(milliseconds=37 * i),
        }
        for i in range(n)
    ]


def test_engagements_round_trip_through_kafka(new_topic, produce, consume_all) -> None:
    topic = new_topic("avro")
    codec = AvroCodec()
    sent = engagements(60)
    produce(topic, [(str(r["user_id"]).encode(), codec.encode("Engagement", r)) for r in sent])

    records = consume_all(topic, len(sent))

    decoded = [codec.decode(m.value, expected_subject="Engagement") for m in records]
    assert {s for s, _ in decoded} == {"Engagement"}
    got = sorted((r for _, r in decoded), key=lambda r: r["event_id"])
    assert got == sorted(sent, key=lambda r: r["event_id"])
    assert all(
        m.key == str(r["user_id"]).encode() for m, (_, r) in zip(records, decoded, strict=True)
    )
