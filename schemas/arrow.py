"""Arrow schemas of the Parquet lake and of the feature tables.

The lake is Hive-partitioned: event tables live under ``<table>/dt=YYYY-MM-DD/``;
``pins/`` and ``users/`` are snapshots. Field names and types match the Avro schemas
in ``schemas/avro`` (Avro ``timestamp-millis`` ⇄ Arrow ``timestamp[ms, UTC]``, Avro
enums ⇄ Arrow strings holding the symbol).
"""

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

OFFSITE_CONVERSION = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("pin_id", pa.int64(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("event_ts", TS, nullable=False),
    ]
)

ENGAGEMENT = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("pin_id", pa.int64(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("event_ts", TS, nullable=False),
    ]
)

PIN_PROFILE = pa.schema(
    [
        pa.field("pin_id", pa.int64(), nullable=False),
        pa.field("interest_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("interest_confidences", pa.list_(pa.float32()), nullable=False),
        pa.field("image_signature", pa.string(), nullable=False),
        pa.field("updated_ts", TS, nullable=False),
    ]
)

USER_PROFILE = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("age_bucket", pa.string(), nullable=False),
        pa.field("gender", pa.string(), nullable=False),
        pa.field("country", pa.string(), nullable=False),
        pa.field("segment", pa.string(), nullable=False),
        pa.field("updated_ts", TS, nullable=False),
    ]
)

# Written by batch/ encode (offline source of the user_history_state feature view).
USER_HISTORY_STATE = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("hidden", pa.list_(pa.float32()), nullable=False),
        pa.field("history_len", pa.int32(), nullable=False),
        # The newest event the state was encoded from (whole seconds, in ms): serving's
        # request gap (ModelConfig.request_gap) is the time from it to the request.
        pa.field("last_event_ts_ms", pa.int64(), nullable=False),
        pa.field("event_timestamp", TS, nullable=False),
    ]
)

# Lake table name -> schema. Event tables are partitioned by dt.
LAKE_TABLES: dict[str, pa.Schema] = {
    "offsite_conversions": OFFSITE_CONVERSION,
    "engagements": ENGAGEMENT,
    "pins": PIN_PROFILE,
    "users": USER_PROFILE,
    "user_history_state": USER_HISTORY_STATE,
}
PARTITIONED_TABLES = frozenset({"offsite_conversions", "engagements", "user_history_state"})
