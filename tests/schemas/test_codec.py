import datetime as dt
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import AvroCodec
from schemas.errors import SchemaError
from schemas.registry import SchemaRegistry, canonical, load_avsc
from towerline.core.contracts import AGE_BUCKETS, CONVERSION_ACTIONS, ENGAGEMENT_ACTIONS, GENDERS

UTC = dt.UTC
ids = st.integers(min_value=0, max_value=2**63 - 1)
# Avro timestamp-millis round-trips datetimes at millisecond precision.
timestamps = st.integers(min_value=0, max_value=4_102_444_800_000).map(
    lambda ms: dt.datetime.fromtimestamp(ms / 1000, tz=UTC)
)
text = st.text(min_size=1, max_size=40)


def engagement_records(actions=ENGAGEMENT_ACTIONS):
    return st.fixed_dictionaries(
        {
            "event_id": text,
            "user_id": ids,
            "pin_id": ids,
            "action": st.sampled_from(actions),
            "event_ts": timestamps,
        }
    )


confidences = st.floats(min_value=0.0625, max_value=1.0, width=32)
pin_profiles = st.integers(min_value=0, max_value=3).flatmap(
    lambda n: st.fixed_dictionaries(
        {
            "pin_id": ids,
            "interest_ids": st.lists(st.integers(0, 2**31 - 1), min_size=n, max_size=n),
            "interest_confidences": st.lists(confidences, min_size=n, max_size=n),
            "image_signature": st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
            "updated_ts": timestamps,
        }
    )
)
user_profiles = st.fixed_dictionaries(
    {
        "user_id": ids,
        "age_bucket": st.sampled_from(AGE_BUCKETS),
        "gender": st.sampled_from(GENDERS),
        "country": st.sampled_from(["US", "DE", "unknown"]),
        "segment": text,
        "updated_ts": timestamps,
    }
)


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec()


@settings(max_examples=150, deadline=None)
@given(engagement_records())
def test_engagement_round_trip(codec, record):
    assert codec.decode(codec.encode("Engagement", record)) == ("Engagement", record)


@settings(max_examples=100, deadline=None)
@given(engagement_records(CONVERSION_ACTIONS))
def test_offsite_conversion_round_trip(codec, record):
    assert codec.decode(codec.encode("OffsiteConversion", record)) == ("OffsiteConversion", record)


@settings(max_examples=100, deadline=None)
@given(pin_profiles)
def test_pin_profile_round_trip(codec, record):
    assert codec.decode(codec.encode("PinProfile", record)) == ("PinProfile", record)


@settings(max_examples=100, deadline=None)
@given(user_profiles)
def test_user_profile_round_trip(codec, record):
    assert codec.decode(codec.encode("UserProfile", record)) == ("UserProfile", record)


def test_wire_format_is_confluent(codec):
    record = {"event_id": "e", "user_id": 1, "pin_id": 2, "action": "SAVE", "event_ts": 0}
    data = codec.encode("Engagement", record)
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert (magic, schema_id) == (0, 1)


def test_builtin_registry_matches_the_avsc_files():
    registry = SchemaRegistry()
    for subject in ["Engagement", "OffsiteConversion", "PinProfile", "UserProfile"]:
        _, parsed = registry.latest(subject)
        assert canonical(parsed) == canonical(load_avsc(subject)), subject


GOOD = {"event_id": "e-1", "user_id": 1, "pin_id": 2, "action": "CLICK", "event_ts": 1000}


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        ({k: v for k, v in GOOD.items() if k != "pin_id"}, "pin_id", "missing"),
        (dict(GOOD, user_id="seven"), "user_id", "not a valid long"),
        (dict(GOOD, action="LIKE"), "action", "EngagementAction"),
        (dict(GOOD, event_ts="yesterday"), "event_ts", "timestamp-millis"),
        (dict(GOOD, user_id=-3), "user_id", ">= 0"),
        (dict(GOOD, event_id=""), "event_id", "empty"),
    ],
)
def test_bad_record_names_schema_and_field(codec, record, field, reason):
    with pytest.raises(SchemaError) as err:
        codec.encode("Engagement", record)
    assert (err.value.schema, err.value.field) == ("Engagement", field)
    assert reason in err.value.reason


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"interest_ids": [1, 2, 3, 4], "interest_confidences": [0.4, 0.3, 0.2, 0.1]},
            "interest_ids",
        ),
        ({"interest_ids": [1, 2], "interest_confidences": [0.4]}, "interest_confidences"),
        ({"interest_ids": [1], "interest_confidences": [1.5]}, "interest_confidences"),
    ],
)
def test_pin_profile_domain_rules(codec, change, field):
    record = {
        "pin_id": 1,
        "interest_ids": [3],
        "interest_confidences": [0.9],
        "image_signature": "00ff00ff00ff00ff",
        "updated_ts": 0,
    }
    with pytest.raises(SchemaError) as err:
        codec.encode("PinProfile", {**record, **change})
    assert err.value.field == field


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x00", "shorter than the 5-byte header"),
        (b"\x07\x00\x00\x00\x01abc", "magic byte is 7"),
        (b"\x00\x00\x00\x03\xe7abc", "unknown schema id 999"),
        (b"\x00\x00\x00\x00\x01\x02", "undecodable body"),
    ],
)
def test_bad_bytes_raise_schema_error(codec, data, reason):
    with pytest.raises(SchemaError) as err:
        codec.decode(data)
    assert reason in str(err.value)


def test_expected_subject_mismatch_is_reported(codec):
    data = codec.encode("Engagement", GOOD)
    with pytest.raises(SchemaError, match="is Engagement, not OffsiteConversion"):
        codec.decode(data, expected_subject="OffsiteConversion")


@pytest.mark.parametrize("extra", [b"\x00", b"garbage", b"\x02x" * 100])
def test_trailing_bytes_after_a_valid_body_are_refused(codec, extra):
    """A body followed by bytes its schema does not account for is not that record."""
    data = codec.encode("Engagement", GOOD)
    with pytest.raises(SchemaError) as err:
        codec.decode(data + extra)
    assert (err.value.schema, err.value.field) == ("Engagement", "<body>")
    assert f"{len(extra)} trailing bytes" in err.value.reason


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (struct.pack(">bI", 0, 99) + b"x", "unknown schema id 99"),
        (AvroCodec().encode("OffsiteConversion", dict(GOOD, action="SIGNUP")), "not Engagement"),
    ],
)
def test_an_unknown_or_foreign_schema_id_is_a_schema_problem_not_framing(codec, data, says):
    with pytest.raises(SchemaError) as err:
        codec.decode(data, expected_subject="Engagement")
    assert err.value.field == "<schema>"
    assert says in err.value.reason
