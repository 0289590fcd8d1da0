"""Events and a plain-Python reference for the stream tests (imported by the tests).

The reference shares no code with ``streams``: it is written from the issue's definitions.
A user's sequence is the newest N distinct events by (event time, event_id); a pin's
count per action is the sum of 2 ** ((ts - last) / H) over its distinct events, valid at
the newest event time ``last``.
"""

import datetime as dt
import io
import random
import struct
import time
from collections import defaultdict
from dataclasses import dataclass

import fastavro
import feast
import pytest
from kafka import KafkaProducer

from schemas.codec import AvroCodec
from schemas.registry import SchemaRegistry

REDIS_URL = "127.0.0.1:6379"
ACTIONS = ("CLOSEUP", "CLICK", "SAVE", "SHARE")
HOUR_MS = 3_600_000
NAMESPACE = "towerline:streams:test"


@dataclass(frozen=True)
class Ev:
    event_id: str
    user_id: int
    pin_id: int
    action: str
    ts_ms: int

    def encode(self, codec: AvroCodec) -> tuple[bytes, bytes]:
        record = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "pin_id": self.pin_id,
            "action": self.action,
            "event_ts": dt.datetime.fromtimestamp(self.ts_ms / 1000, dt.UTC),
        }
        return str(self.user_id).encode(), codec.encode("Engagement", record)


def make_events(
    n: int, *, users: int, pins: int, now_ms: int, seed: int, seq_len: int, dup_rate: float = 0.05
) -> list[Ev]:
    """``n`` events over the last 3 days in shuffled (late) order, plus duplicates.

    Duplicates repeat only events that end up in their user's newest ``seq_len``, which
    the worker detects whatever the arrival order (its dedup window is the sequence).
    """
    rng = random.Random(seed)
    events = [
        Ev(
            event_id=f"e{seed}-{i}",
            user_id=rng.randrange(users),
            pin_id=int(pins * rng.random() ** 2),  # some pins much more popular
            action=rng.choice(ACTIONS),
            ts_ms=now_ms - rng.randrange(72 * HOUR_MS),
        )
        for i in range(n)
    ]
    by_user: dict[int, list[Ev]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    newest = [e for evs in by_user.values() for e in sorted(evs, key=_order)[-seq_len:]]
    dups = rng.sample(newest, int(len(newest) * dup_rate))
    out = events + dups
    rng.shuffle(out)
    return out


def _order(e: Ev) -> tuple[int, str]:
    return e.ts_ms, e.event_id


@dataclass
class Reference:
    seqs: dict[int, tuple[list[int], list[int], list[str]]]  # user -> pin_ids, ts, actions
    pins: dict[int, tuple[list[float], int]]  # pin -> counts in ACTIONS order, last ts


def reference(events: list[Ev], seq_len: int, half_life_ms: float) -> Reference:
    distinct: dict[str, Ev] = {}
    for e in events:
        distinct.setdefault(e.event_id, e)
    by_user: dict[int, list[Ev]] = defaultdict(list)
    by_pin: dict[int, list[Ev]] = defaultdict(list)
    for e in distinct.values():
        by_user[e.user_id].append(e)
        by_pin[e.pin_id].append(e)
    seqs = {}
    for user, evs in by_user.items():
        kept = sorted(evs, key=_order)[-seq_len:]
        seqs[user] = ([e.pin_id for e in kept], [e.ts_ms for e in kept], [e.action for e in kept])
    pins = {}
    for pin, evs in by_pin.items():
        last = max(e.ts_ms for e in evs)
        counts = [0.0] * len(ACTIONS)
        for e in evs:
            counts[ACTIONS.index(e.action)] += 2.0 ** ((e.ts_ms - last) / half_life_ms)
        pins[pin] = (counts, last)
    return Reference(seqs, pins)


SEQ_REFS = ["user_realtime_seq:pin_ids", "user_realtime_seq:event_ts_ms", "user_realtime_seq:actions"]  # fmt: skip
PIN_REFS = [f"pin_engagement:decayed_{a.lower()}" for a in ACTIONS] + ["pin_engagement:last_event_ts_ms"]  # fmt: skip


def assert_online_matches(store: feast.FeatureStore, ref: Reference) -> None:
    """Every user's sequence and every pin's counts read through get_online_features."""
    users = sorted(ref.seqs)
    got = store.get_online_features(SEQ_REFS, [{"user_id": u} for u in users]).to_dict()
    for i, u in enumerate(users):
        want = ref.seqs[u]
        assert (got["pin_ids"][i], got["event_ts_ms"][i], got["actions"][i]) == (
            want[0], want[1], want[2],
        ), f"user {u}"  # fmt: skip
    pins = sorted(ref.pins)
    got = store.get_online_features(PIN_REFS, [{"pin_id": p} for p in pins]).to_dict()
    for i, p in enumerate(pins):
        counts, last = ref.pins[p]
        assert got["last_event_ts_ms"][i] == last, f"pin {p}"
        values = [got[f"decayed_{a.lower()}"][i] for a in ACTIONS]
        assert values == pytest.approx(counts, rel=1e-9, abs=1e-12), f"pin {p}"


def missing_event_ts() -> bytes:
    """An Engagement framed with id 1 whose writer left out event_ts."""
    schema = SchemaRegistry().latest("Engagement")[1]
    fields = [f for f in schema["fields"] if f["name"] != "event_ts"]
    partial = fastavro.parse_schema({**schema, "name": "Partial", "fields": fields})
    body = io.BytesIO()
    fastavro.schemaless_writer(body, partial, {"event_id": "m", "user_id": 1, "pin_id": 2, "action": "CLICK"})  # fmt: skip
    return struct.pack(">bI", 0, 1) + body.getvalue()


def trickle(bootstrap: str, topic: str, events: list[Ev], seconds: float) -> None:
    """Send ``events`` spread over ``seconds``, so the stream is still flowing mid-test."""
    codec = AvroCodec()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    chunk = max(1, len(events) // int(seconds * 10))
    for start in range(0, len(events), chunk):
        for e in events[start : start + chunk]:
            key, value = e.encode(codec)
            producer.send(topic, key=key, value=value)
        time.sleep(0.1)
    producer.flush(30)
    producer.close()
