"""Feast declarations of towerline: entities, sources and the five feature views.

Declarations only, no I/O at import. ``declare(lake)`` builds every object for one lake
location, so Python callers (``towerline.core.featurestore.apply_repo``) can point the offline
sources at any lake; the module-level names below are what ``feast apply`` collects.

The module-level objects point at ``../data/lake``, i.e. ``<repo>/data/lake`` (Feast
resolves a relative FileSource path against the feature repo directory, not the cwd);
``towerline features apply --lake DIR`` points them anywhere. No environment is read here.

Conventions the writers must follow:
- every view carries ``tags["freshness_target_s"]`` (seconds, as a string) for monitoring;
- rows written online carry their event time in the source's timestamp column
  (``updated_ts`` for profiles, ``event_timestamp`` for everything else);
- online reads do not apply ttl in Feast 0.67; ttl bounds point-in-time joins and
  materialisation windows only.
"""

import dataclasses
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float32, Float64, Int32, Int64, String

from towerline.core.contracts import (
    ENGAGEMENT_ACTIONS,
    FRESHNESS_TAG,
    HALF_LIFE_TAG,
    PIN_ENGAGEMENT,
    PIN_PROFILE,
    USER_HISTORY_STATE,
    USER_PROFILE,
    USER_REALTIME_SEQ,
    WRITTEN_BY_TAG,
)

DEFAULT_LAKE = "../data/lake"
DAILY_FRESHNESS = timedelta(hours=26)  # daily job + 2 h of slack
STREAM_FRESHNESS = timedelta(seconds=1)  # p99 event-to-online latency

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A user.")
pin = Entity(name="pin", join_keys=["pin_id"], value_type=ValueType.INT64, description="A pin.")
model_version = Entity(
    name="model_version",
    join_keys=["model_version"],
    value_type=ValueType.STRING,
    description="Model version whose encoder produced a cached state (e.g. 'v3').",
)
ENTITIES = (user, pin, model_version)


@dataclasses.dataclass(frozen=True)
class FeatureRepo:
    """Every declared object that is not an entity, built for one lake location."""

    user_realtime_seq_push_source: PushSource
    pin_engagement_push_source: PushSource
    user_history_state_fv: FeatureView
    user_profile_fv: FeatureView
    user_realtime_seq_fv: FeatureView
    pin_profile_fv: FeatureView
    pin_engagement_fv: FeatureView

    def feature_views(self) -> list[FeatureView]:
        return [v for v in self._values() if isinstance(v, FeatureView)]

    def objects(self) -> list[object]:
        """What ``FeatureStore.apply`` needs: entities, sources (batch ones too), views."""
        batch = [v.batch_source for v in self.feature_views()]
        return [*ENTITIES, *batch, *self._values()]

    def _values(self) -> list[object]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]


def _tags(freshness: timedelta, written_by: str) -> dict[str, str]:
    return {FRESHNESS_TAG: str(int(freshness.total_seconds())), WRITTEN_BY_TAG: written_by}


def _parquet_source(
    name: str, lake: str, table: str, timestamp_field: str, what: str
) -> FileSource:
    return FileSource(
        name=name,
        path=f"{lake.rstrip('/')}/{table}",
        file_format=ParquetFormat(),
        timestamp_field=timestamp_field,
        description=what,
    )


def _push_source(lake: str, view: str, what: str) -> PushSource:
    # The batch source is where `push(..., to=OFFLINE)` would append; online pushes ignore it.
    batch = _parquet_source(
        f"{view}_batch_source", lake, f"pushed/{view}", "event_timestamp", f"Offline copy: {what}"
    )
    return PushSource(name=f"{view}_push_source", batch_source=batch, description=what)


def _history_state_fv(lake: str) -> FeatureView:
    return FeatureView(
        name=USER_HISTORY_STATE,
        entities=[user, model_version],
        ttl=DAILY_FRESHNESS,
        schema=[
            Field(
                name="hidden",
                dtype=Array(Float32),
                description="Last hidden state of the SequenceEncoder of model_version, [d].",
            ),
            Field(
                name="history_len",
                dtype=Int32,
                description="Offsite events the state was encoded from (0 = cold start).",
            ),
            Field(
                name="last_event_ts_ms",
                dtype=Int64,
                description="Time of the newest event the state was encoded from (ms, "
                "whole seconds): the online tower's request gap starts there.",
            ),
        ],
        source=_parquet_source(
            "user_history_state_source",
            lake,
            "user_history_state",
            "event_timestamp",
            "Daily encoded history states (dt= partitions).",
        ),
        description="Cached offline part of the user tower, per model version.",
        tags=_tags(DAILY_FRESHNESS, "batch encode"),
    )


def _user_profile_fv(lake: str) -> FeatureView:
    return FeatureView(
        name=USER_PROFILE,
        entities=[user],
        # Profiles are snapshots that rarely change: a short ttl would drop old users from
        # point-in-time joins, so the ttl is long and the freshness target is on the tag.
        ttl=timedelta(days=365),
        schema=[
            Field(
                name="age_bucket", dtype=String, description="towerline.core.contracts.AGE_BUCKETS."
            ),
            Field(name="gender", dtype=String, description="towerline.core.contracts.GENDERS."),
            Field(name="country", dtype=String, description="ISO 3166-1 alpha-2 code."),
            Field(name="segment", dtype=String, description="Marketing segment label."),
        ],
        source=_parquet_source(
            "user_profile_source", lake, "users", "updated_ts", "User profile snapshot."
        ),
        description="Demographics for the context layer.",
        tags=_tags(DAILY_FRESHNESS, "batch profiles"),
    )


def _pin_profile_fv(lake: str) -> FeatureView:
    return FeatureView(
        name=PIN_PROFILE,
        entities=[pin],
        ttl=timedelta(days=365),  # snapshot, see user_profile
        schema=[
            Field(
                name="interest_ids",
                dtype=Array(Int32),
                description="Up to 3 interest ids of the pin, most confident first.",
            ),
            Field(
                name="interest_confidences",
                dtype=Array(Float32),
                description="Confidence in [0, 1] of each interest id, same order.",
            ),
            Field(
                name="image_signature",
                dtype=String,
                description="Image hash; pins sharing it are duplicates in the corpus.",
            ),
        ],
        source=_parquet_source(
            "pin_profile_source", lake, "pins", "updated_ts", "Pin profile snapshot."
        ),
        description="Subject-pin interests for the context layer and corpus dedup.",
        tags=_tags(DAILY_FRESHNESS, "batch profiles"),
    )


def _realtime_seq_fv(push_source: PushSource) -> FeatureView:
    return FeatureView(
        name=USER_REALTIME_SEQ,
        entities=[user],
        ttl=timedelta(days=7),  # older than a week is not "real-time" context any more
        schema=[
            Field(
                name="pin_ids",
                dtype=Array(Int64),
                description="Last N engaged pins, oldest first (newest last).",
            ),
            Field(
                name="event_ts_ms",
                dtype=Array(Int64),
                description="Event time (ms since epoch, UTC) of each pin, same order.",
            ),
            Field(
                name="actions",
                dtype=Array(String),
                description="Engagement action of each pin (ENGAGEMENT_ACTIONS), same order.",
            ),
            Field(
                name="updated_ts_ms",
                dtype=Int64,
                description="When the stream worker wrote this row (ms since epoch, UTC).",
            ),
        ],
        source=push_source,
        description="Real-time user sequence kept by the streams.",
        tags=_tags(STREAM_FRESHNESS, "streams"),
    )


def _pin_engagement_fv(push_source: PushSource) -> FeatureView:
    decayed = [
        Field(
            name=f"decayed_{action.lower()}",
            dtype=Float64,
            description=f"Time-decayed count of {action} events as of last_event_ts_ms.",
        )
        for action in ENGAGEMENT_ACTIONS
    ]
    last = Field(
        name="last_event_ts_ms",
        dtype=Int64,
        description="Time the counts are valid at (ms since epoch, UTC); decay forward on read.",
    )
    return FeatureView(
        name=PIN_ENGAGEMENT,
        entities=[pin],
        ttl=timedelta(days=90),  # the corpus window: older engagement has decayed away
        schema=[*decayed, last],
        source=push_source,
        description="Time-decayed engagement counts per pin kept by the streams.",
        # The stream worker records the half-life it runs with (default one day).
        tags={**_tags(STREAM_FRESHNESS, "streams"), HALF_LIFE_TAG: "86400"},
    )


def declare(lake: str) -> FeatureRepo:
    """All sources and views with the offline sources under ``lake`` (path or URI)."""
    seq_push = _push_source(lake, USER_REALTIME_SEQ, "Real-time user sequences.")
    engagement_push = _push_source(lake, PIN_ENGAGEMENT, "Decayed pin engagement counts.")
    return FeatureRepo(
        user_realtime_seq_push_source=seq_push,
        pin_engagement_push_source=engagement_push,
        user_history_state_fv=_history_state_fv(lake),
        user_profile_fv=_user_profile_fv(lake),
        user_realtime_seq_fv=_realtime_seq_fv(seq_push),
        pin_profile_fv=_pin_profile_fv(lake),
        pin_engagement_fv=_pin_engagement_fv(engagement_push),
    )


# What `feast apply` collects (it scans module attributes for Feast objects).
REPO = declare(DEFAULT_LAKE)
user_realtime_seq_push_source = REPO.user_realtime_seq_push_source
pin_engagement_push_source = REPO.pin_engagement_push_source
user_history_state_fv = REPO.user_history_state_fv
user_profile_fv = REPO.user_profile_fv
user_realtime_seq_fv = REPO.user_realtime_seq_fv
pin_profile_fv = REPO.pin_profile_fv
pin_engagement_fv = REPO.pin_engagement_fv
