"""Decoding and event-time hygiene: every record is an event or a reject with its reason."""

import struct
from types import SimpleNamespace

import pytest
from stream_kit import Ev, missing_event_ts

from schemas.codec import AvroCodec
from streams import events as ev
from streams.events import classify

NOW = 1_760_000_000_000
LATE, SKEW = 7 * 86_400_000, 300_000
CODEC = AvroCodec()


def record(
    value: bytes | None, offset: int = 0, key: bytes | None = b"1", headers=()
) -> SimpleNamespace:
    return SimpleNamespace(
        topic="engagements", partition=2, offset=offset, key=key, value=value, timestamp=NOW,
        headers=list(headers),
    )  # fmt: skip


def good(ts_ms: int = NOW - 1000, eid: str = "x") -> bytes:
    return Ev(eid, 1, 2, "SAVE", ts_ms).encode(CODEC)[1]


def wrong_schema() -> bytes:
    conversion = {"event_id": "w", "user_id": 1, "pin_id": 2, "action": "SIGNUP", "event_ts": 0}
    return CODEC.encode("OffsiteConversion", conversion)


@pytest.mark.parametrize(
    ("value", "code", "says"),
    [
        (b"\x00\x01", ev.WIRE, "shorter than the 5-byte header"),
        (b"garbage bytes", ev.WIRE, "magic byte"),
        (None, ev.WIRE, "expected bytes"),
        (struct.pack(">bI", 0, 99) + b"x", ev.SCHEMA, "unknown schema id 99"),
        (wrong_schema(), ev.SCHEMA, "is OffsiteConversion, not Engagement"),
        (good() + b"\x00junk", ev.BODY, "5 trailing bytes after the record"),
        (missing_event_ts(), ev.BODY, "undecodable body"),
        (good(NOW + 86_400_000), ev.TOO_FAR_FUTURE, "in the future"),
        (good(NOW - 8 * 86_400_000), ev.TOO_LATE, "allowed lateness"),
    ],
)
def test_rejects_carry_code_reason_and_origin(value, code: str, says: str) -> None:
    events, rejected = classify([record(value, offset=41)], CODEC, NOW, LATE, SKEW)
    assert events == []
    [r] = rejected
    assert (r.code, r.topic, r.partition, r.offset, r.key, r.value) == (
        code, "engagements", 2, 41, b"1", value,
    )  # fmt: skip
    assert says in r.reason


def test_good_records_become_events_within_the_bounds() -> None:
    records = [record(good(NOW - LATE + 1, "old-ok"), 1), record(good(NOW + SKEW, "ahead-ok"), 2)]
    events, rejected = classify(records, CODEC, NOW, LATE, SKEW)
    assert rejected == []
    assert [(e.event_id, e.action, e.partition, e.offset) for e in events] == [
        ("old-ok", 2, 2, 1), ("ahead-ok", 2, 2, 2),
    ]  # fmt: skip
    assert events[0].ts_ms == NOW - LATE + 1 and events[0].record_ts_ms == NOW


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (b"2", "key b'2' is not the user_id b'1'"),
        (b"01", "key b'01' is not the user_id b'1'"),
        (None, "record has no key; expected b'1'"),
        (b"x" * 1000, "..."),
    ],
)
def test_a_key_that_is_not_the_user_id_is_dead_lettered_not_applied(key, says: str) -> None:
    """The worker owns a user through the partition the key chose: another key breaks that."""
    events, rejected = classify([record(good(), 5, key=key)], CODEC, NOW, LATE, SKEW)
    assert events == []
    [r] = rejected
    assert (r.code, r.offset, r.key) == (ev.KEY_MISMATCH, 5, key)
    assert says in r.reason and len(r.reason) < 120


def test_rejects_keep_the_original_headers() -> None:
    head = [("trace", b"abc"), ("empty", None), ("trace", b"second")]
    _, [r] = classify([record(b"bad", headers=head)], CODEC, NOW, LATE, SKEW)
    assert r.headers == tuple(head)
