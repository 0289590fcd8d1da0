"""user_realtime_seq: the last N engagements of a user, oldest first, as a pure handler.

A sequence is a tuple of ``Entry`` sorted by ``(ts_ms, event_id)``; ``add`` returns the
newest ``max_len`` of (sequence ∪ {entry}). Because the result depends only on the *set*
of events, adding the same events in any order, or twice, gives the same sequence: a late
event lands at its place, a duplicate (same event_id) changes nothing, and replaying
after a crash is harmless for this state.
"""

import bisect
import struct
from typing import NamedTuple

_VERSION = 1
_HEAD = struct.Struct("<BH")


class Entry(NamedTuple):
    """One engaged pin. Tuple order makes ``(ts_ms, event_id)`` the sort key."""

    ts_ms: int
    event_id: str
    pin_id: int
    action: int  # index into towerline.core.contracts.ENGAGEMENT_ACTIONS


Seq = tuple[Entry, ...]
EMPTY: Seq = ()


def contains(seq: Seq, event_id: str) -> bool:
    """True when ``event_id`` is one of the retained entries."""
    for e in seq:  # noqa: SIM110 (a loop is ~3x faster than any() over a generator here)
        if e.event_id == event_id:
            return True
    return False


def add(seq: Seq, entry: Entry, max_len: int) -> Seq:
    """``seq`` with ``entry`` inserted at its event-time place, trimmed to the newest max_len."""
    if contains(seq, entry.event_id):
        return seq
    return insert(seq, entry, max_len)


def insert(seq: Seq, entry: Entry, max_len: int) -> Seq:
    """``add`` for an entry known not to be in ``seq`` (the caller checked)."""
    if len(seq) >= max_len and entry < seq[-max_len]:
        return seq if len(seq) == max_len else seq[-max_len:]  # too old to be kept
    if not seq or seq[-1] < entry:  # the common case: newest so far, append
        keep = max_len - 1
        return (*seq[len(seq) - keep :], entry) if len(seq) > keep else (*seq, entry)
    items = list(seq)
    bisect.insort(items, entry)
    return tuple(items[-max_len:])


def encode(seq: Seq) -> bytes:
    """Compact binary form for the state store (~19 bytes + event id per entry)."""
    if not seq:
        return _HEAD.pack(_VERSION, 0)
    n = len(seq)
    ts, ids, pins, actions = zip(*seq, strict=True)  # columns, transposed in C
    raw = [i.encode() for i in ids]
    fixed = struct.pack(f"<{n}q{n}q{n}H", *ts, *pins, *map(len, raw))
    return b"".join((_HEAD.pack(_VERSION, n), fixed, bytes(actions), *raw))


def decode(blob: bytes) -> Seq:
    """Inverse of ``encode``."""
    version, n = _HEAD.unpack_from(blob)
    if version != _VERSION:
        raise ValueError(f"unknown sequence encoding version {version}")
    fixed = struct.Struct(f"<{n}q{n}q{n}H")
    numbers = fixed.unpack_from(blob, _HEAD.size)
    pos = _HEAD.size + fixed.size
    actions = blob[pos : pos + n]
    pos += n
    out = []
    for i in range(n):
        length = numbers[2 * n + i]
        event_id = blob[pos : pos + length].decode()
        pos += length
        out.append(Entry(numbers[i], event_id, numbers[n + i], actions[i]))
    return tuple(out)
