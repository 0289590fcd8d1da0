"""Schema evolution: readers of the old schema read records written with an added optional field."""

import pytest

from schemas.codec import AvroCodec
from schemas.registry import SchemaRegistry, load_avsc

V1 = load_avsc("Engagement")
V2 = {
    **V1,
    "fields": [*V1["fields"], {"name": "surface", "type": ["null", "string"], "default": None}],
}
RECORD = {
    "event_id": "e-9",
    "user_id": 5,
    "pin_id": 6,
    "action": "SHARE",
    "event_ts": 1_700_000_000_000,
}


@pytest.fixture
def registry(tmp_path) -> SchemaRegistry:
    registry = SchemaRegistry(tmp_path / "registry.json")
    assert registry.register("Engagement", V1) == 1
    return registry


def test_old_reader_reads_records_with_added_optional_field(registry):
    writer = AvroCodec(registry)
    v2_id = registry.register("Engagement", V2)
    assert v2_id == 2
    data = writer.encode("Engagement", {**RECORD, "surface": "home_feed"})
    assert data[1:5] == v2_id.to_bytes(4, "big")

    old_reader = AvroCodec(SchemaRegistry(registry.path), reader_schemas={"Engagement": V1})
    _, record = old_reader.decode(data)
    assert "surface" not in record
    assert record["event_id"] == "e-9" and record["action"] == "SHARE"


def test_new_reader_fills_default_for_old_records(registry):
    old_writer = AvroCodec(registry)
    data = old_writer.encode("Engagement", RECORD)
    registry.register("Engagement", V2)
    _, record = AvroCodec(registry).decode(data)
    assert record["surface"] is None


def test_registering_the_same_schema_twice_keeps_its_id(registry):
    assert registry.register("Engagement", V1) == 1
    assert SchemaRegistry(registry.path).latest("Engagement")[0] == 1
