"""The pure handlers: sequences, decayed counts and the batch fold, against the reference."""

import random
import struct

import pytest
from feast.protos.feast.types.Value_pb2 import Int64List, Value
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_kit import ACTIONS, Ev, reference

from streams import decay, sequence
from streams.events import Event
from streams.feast_layout import int64_value_bytes, packed_int64, timestamp_bytes, varint
from streams.redis_rows import decode_user, encode_user, user_record
from streams.sequence import Entry
from streams.update import OffsetMove, build_update

H = 86_400_000.0


def entry(ts: int, eid: str, pin: int = 1, action: int = 0) -> Entry:
    return Entry(ts, eid, pin, action)


def test_sequence_orders_by_event_time_and_keeps_the_newest() -> None:
    seq = sequence.EMPTY
    for ts, eid in [(30, "c"), (10, "a"), (40, "d"), (20, "b")]:
        seq = sequence.add(seq, entry(ts, eid), max_len=3)
    assert [e.event_id for e in seq] == ["b", "c", "d"]  # oldest first, "a" trimmed


def test_late_event_is_inserted_at_its_place_and_duplicates_change_nothing() -> None:
    seq = (entry(10, "a"), entry(30, "c"))
    seq = sequence.add(seq, entry(20, "b"), max_len=5)
    assert [e.event_id for e in seq] == ["a", "b", "c"]
    assert sequence.add(seq, entry(99, "b"), max_len=5) is seq  # same event_id: ignored
    full = sequence.add(seq, entry(40, "d"), max_len=4)
    assert sequence.add(full, entry(1, "old"), max_len=4) is full  # older than a full window


def test_equal_timestamps_order_by_event_id() -> None:
    seq = sequence.EMPTY
    for eid in ["z", "m", "a"]:
        seq = sequence.add(seq, entry(5, eid), max_len=5)
    assert [e.event_id for e in seq] == ["a", "m", "z"]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**13), st.text(max_size=12), st.integers(0, 2**62), st.integers(0, 3)
        ),  # fmt: skip
        max_size=60,
    )
)
def test_encode_decode_round_trip(items: list) -> None:
    seq = tuple(sorted({Entry(*i) for i in items}))
    assert sequence.decode(sequence.encode(seq)) == seq  # SQLite's state
    if seq:  # Redis's state, built with the Feast row (ids may be non-ASCII)
        state, values = encode_user(seq, b"\x20\x01")
        assert decode_user(state) == seq and values[-1] == b"\x20\x01"


INT64 = st.integers(-(2**63), 2**63 - 1)


@given(st.integers(0, 10**13), st.text(max_size=12), INT64, st.integers(0, 3), st.binary(max_size=30))  # fmt: skip
def test_one_entry_fast_path_writes_the_same_bytes(ts, eid, pin, action, key) -> None:
    seq, updated = (Entry(ts, eid, pin, action),), int64_value_bytes(ts + 5)
    state, values = encode_user(seq, updated)  # the general path, protobuf's own encoder
    items = (key, state, timestamp_bytes(ts), *values)
    framed = struct.pack(f"<{1 + len(items)}I", len(items), *map(len, items)) + b"".join(items)
    assert user_record(key, seq, updated, n_values=4) == framed


# Each side of every 7-bit group (varint bytes) and 14-bit group (``varint``'s tables).
EDGES = st.sampled_from([2**k + d for k in range(7, 63, 7) for d in (-1, 0, 1)] + [2**63 - 1])


@given(EDGES | st.integers(0, 2**14 + 5) | st.integers(0, 10**13) | st.integers(0, 2**63 - 1))
def test_hand_built_protobuf_values_are_protobufs_own_bytes(n: int) -> None:
    assert int64_value_bytes(n) == Value(int64_val=n).SerializeToString()
    assert packed_int64(n) == Int64List(val=[n]).SerializeToString()
    assert packed_int64(-n - 1) == Int64List(val=[-n - 1]).SerializeToString()


def test_a_negative_varint_is_refused_not_read_from_the_table_end() -> None:
    with pytest.raises(ValueError, match="negative"):
        varint(-3)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 12))
def test_any_arrival_order_gives_the_reference(seed: int, max_len: int) -> None:
    rng = random.Random(seed)
    events = [
        Ev(f"e{i}", 1, rng.randrange(5), rng.choice(ACTIONS), rng.randrange(10**6))
        for i in range(rng.randrange(1, 40))
    ]
    ref = reference(events, max_len, H)
    for _ in range(3):
        rng.shuffle(events)
        seq, counts = sequence.EMPTY, {}
        for e in events + events[:5]:  # replays are harmless for sequences
            seq = sequence.add(seq, Entry(e.ts_ms, e.event_id, e.pin_id, ACTIONS.index(e.action)), max_len)  # fmt: skip
        for e in events:
            counts[e.pin_id] = decay.add(counts.get(e.pin_id), ACTIONS.index(e.action), e.ts_ms, H)
        assert [x.pin_id for x in seq] == ref.seqs[1][0]
        assert [x.ts_ms for x in seq] == ref.seqs[1][1]
        for pin, (want, last) in ref.pins.items():
            assert counts[pin].ref_ms == last
            assert list(counts[pin].values) == pytest.approx(want, rel=1e-12)


def test_decay_halves_per_half_life_and_merge_commutes() -> None:
    a = decay.add(None, 0, 0, half_life_ms=1000.0)
    b = decay.add(None, 0, 1000, half_life_ms=1000.0)
    ab, ba = decay.merge(a, b, 1000.0), decay.merge(b, a, 1000.0)
    assert ab == ba == decay.Decayed((1.5, 0.0, 0.0, 0.0), 1000)
    assert decay.value_at(ab, 3000, 1000.0) == (0.375, 0.0, 0.0, 0.0)
    assert decay.merge(None, a, 1.0) is a and decay.merge(a, None, 1.0) is a


def ev(eid: str, user: int, pin: int, ts: int, offset: int, partition: int = 0) -> Event:
    return Event(eid, user, pin, 1, ts, partition, offset, -1)


def test_batch_folds_events_and_counts_each_event_once() -> None:
    stored = {7: (Entry(100, "old", 3, 1),)}
    events = [
        ev("a", 7, 3, 200, 5),
        ev("old", 7, 3, 100, 6),  # already in the stored sequence
        ev("a", 7, 3, 200, 7),  # repeated inside the batch
        ev("b", 8, 4, 50, 8, partition=1),
    ]
    moves = {0: OffsetMove(4, 7), 1: OffsetMove(-1, 8)}
    update = build_update(events, stored, moves, max_len=10, half_life_ms=H, write_ms=999)
    assert update.duplicates == 2
    assert [e.event_id for e in update.counted] == ["a", "b"]
    assert [e.event_id for e in update.users[7]] == ["old", "a"]
    assert update.pins[3] == decay.Decayed((0.0, 1.0, 0.0, 0.0), 200)  # "old" not re-counted
    assert update.offsets == moves and update.write_ms == 999
    assert update.newest_event_ms == {0: 200, 1: 50}  # the late duplicate at 100 moves nothing


def test_a_partition_of_dead_letters_only_has_no_newest_event_time() -> None:
    moves = {0: OffsetMove(-1, 3), 2: OffsetMove(5, 9)}
    update = build_update([ev("a", 1, 2, 70, 3)], {}, moves, max_len=3, half_life_ms=H, write_ms=0)
    assert update.newest_event_ms == {0: 70}


def test_an_event_too_old_for_a_full_sequence_still_counts_for_its_pin() -> None:
    stored = {1: tuple(Entry(100 + i, f"n{i}", 9, 0) for i in range(3))}
    update = build_update(
        [ev("ancient", 1, 2, 5, 0)], stored, {0: OffsetMove(-1, 0)}, max_len=3, half_life_ms=H,
        write_ms=0,
    )  # fmt: skip
    assert update.users == {}  # the sequence does not change ...
    assert update.pins[2].ref_ms == 5  # ... but the engagement happened
