"""Fold one polled batch of events into the state changes it causes (pure).

Per batch, not per event: each touched user gets one new sequence and each touched pin
one delta, so the store and the online store see one write per key however many events
hit it. The dedup rule for both states is the user's retained sequence (plus the batch
itself): an event whose event_id is already there is a duplicate and counts nowhere.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streams import decay, sequence
from streams.events import Event

_new = tuple.__new__  # skips NamedTuple's Python-level __new__ (per event)


@dataclass(frozen=True)
class OffsetMove:
    """A partition's applied offset before (-1: none yet) and after this batch."""

    expected: int
    applied: int


@dataclass
class BatchUpdate:
    """What one batch changes, ready for ``StateStore.commit``."""

    users: dict[int, sequence.Seq] = field(default_factory=dict)  # new full sequences
    pins: dict[int, decay.Decayed] = field(default_factory=dict)  # this batch's deltas
    offsets: dict[int, OffsetMove] = field(default_factory=dict)  # by partition
    # Newest event time per partition among the batch's events, duplicates included (they
    # were read too); a partition of dead letters only has none. Stored as its progress.
    newest_event_ms: dict[int, int] = field(default_factory=dict)
    counted: list[Event] = field(default_factory=list)  # events that changed state
    duplicates: int = 0
    write_ms: int = 0  # wall time of the write: updated_ts_ms of the user rows


def build_update(
    events: Iterable[Event],
    seqs: Mapping[int, sequence.Seq],
    offsets: Mapping[int, OffsetMove],
    *,
    max_len: int,
    half_life_ms: float,
    write_ms: int,
) -> BatchUpdate:
    """Apply ``events`` to the current sequences ``seqs`` (missing users are empty).

    ``offsets`` covers every partition of the batch, dead-lettered records included:
    they are handled too, and the applied offset must move past them.
    """
    update = BatchUpdate(offsets=dict(offsets), write_ms=write_ms)
    users, pins, newest = update.users, update.pins, update.newest_event_ms
    counted = update.counted
    seen: set[str] = set()  # an event too old for a full sequence is not in it; catch repeats
    for ev in events:
        # One unpacking instead of a dozen NamedTuple attribute reads: this runs per event.
        event_id, user_id, pin_id, action, ts_ms, partition, _, _ = ev
        if ts_ms > newest.get(partition, -1):
            newest[partition] = ts_ms
        seq = users[user_id] if user_id in users else seqs.get(user_id, sequence.EMPTY)
        if event_id in seen or sequence.contains(seq, event_id):
            update.duplicates += 1
            continue
        seen.add(event_id)
        entry = _new(sequence.Entry, (ts_ms, event_id, pin_id, action))
        new_seq = sequence.insert(seq, entry, max_len)
        if new_seq is not seq:
            users[user_id] = new_seq
        pins[pin_id] = decay.add(pins.get(pin_id), action, ts_ms, half_life_ms)
        counted.append(ev)
    return update
