"""Dead-letter headers: the record's own first, then the reason and origin."""

from streams.deadletter import headers, read_headers
from streams.events import Rejected


def rejected(**overrides) -> Rejected:
    base = dict(code="key_mismatch", reason="key b'2' is not the user_id b'1'", topic="eng",
                partition=3, offset=17, key=b"2", value=b"v", headers=(("trace", b"t-1"),))  # fmt: skip
    return Rejected(**{**base, **overrides})


def test_original_headers_come_first_and_are_kept_as_they_were() -> None:
    out = headers(rejected(headers=(("trace", b"t-1"), ("trace", b"t-2"))), "w-1")
    assert out[:2] == [("trace", b"t-1"), ("trace", b"t-2")]
    assert read_headers(out) == {
        "code": "key_mismatch", "reason": "key b'2' is not the user_id b'1'", "topic": "eng",
        "partition": "3", "offset": "17", "worker": "w-1",
    }  # fmt: skip


def test_a_null_header_value_is_sent_empty_and_a_second_dead_lettering_wins() -> None:
    first = headers(rejected(), "w-1")
    again = headers(rejected(code="too_late", offset=4, headers=(*first, ("null", None))), "w-2")
    assert ("null", b"") in again and all(isinstance(v, bytes) for _, v in again)
    assert read_headers(again)["code"] == "too_late" and read_headers(again)["offset"] == "4"
    assert [name for name, _ in again].count("dlq.code") == 2  # the history is kept
