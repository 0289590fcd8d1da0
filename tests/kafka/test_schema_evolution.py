"""Schema evolution through Kafka: an added optional field is invisible to old readers
and defaulted for new readers of old records."""

import datetime as dt

import pytest

from schemas.codec import AvroCodec
from schemas.registry import SchemaRegistry, load_avsc

pytestmark = pytest.mark.kafka

SURFACE = {"name": "surface", "type": ["null", "string"], "default": None}
T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def engagement(i: int, **extra) -> dict:
    return {
        "event_id": f"ev-{i}",
        "user_id": i,
        "pin_id": 500 + i,
        "action": "SAVE",
        "event_ts": T0 + dt.timedelta(seconds=i),
        **extra,
    }


@pytest.fixture
def registry_path(tmp_path):
    return tmp_path / "registry.json"


def test_v1_and_v2_readers_read_both_writers(
    registry_path, new_topic, produce, consume_all
) -> None:
    topic = new_topic("evolve")
    v1 = load_avsc("Engagement")
    v2 = {**v1, "fields": [*v1["fields"], SURFACE]}

    registry = SchemaRegistry(registry_path)
    v1_id = registry.register("Engagement", v1)
    old = [engagement(i) for i in range(5)]
    produce(topic, [(b"k", AvroCodec(registry).encode("Engagement", r)) for r in old])

    v2_id = registry.register("Engagement", v2)
    assert v2_id != v1_id
    new = [engagement(i, surface=("home" if i % 2 else None)) for i in range(5, 10)]
    produce(topic, [(b"k", AvroCodec(registry).encode("Engagement", r)) for r in new])

    values = [m.value for m in consume_all(topic, len(old) + len(new))]
    assert sorted(int.from_bytes(v[1:5], "big") for v in values) == [v1_id] * 5 + [v2_id] * 5

    v1_reader = AvroCodec(SchemaRegistry(registry_path), reader_schemas={"Engagement": v1})
    v2_reader = AvroCodec(SchemaRegistry(registry_path))  # newest version = v2

    by_v1 = sorted((v1_reader.decode(v)[1] for v in values), key=lambda r: r["user_id"])
    assert by_v1 == old + [{k: v for k, v in r.items() if k != "surface"} for r in new]

    by_v2 = sorted((v2_reader.decode(v)[1] for v in values), key=lambda r: r["user_id"])
    assert by_v2 == [{**r, "surface": None} for r in old] + new
