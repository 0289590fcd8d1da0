"""Names every part of towerline agrees on, in one torch-free place.

Enumerations are in Avro symbol order (``schemas/avro/*.avsc`` declares the same symbols).
Feature-view and feature names are those of ``feature_repo/declarations.py``; the stream
workers, the batch jobs, serving and monitoring all read and write by these names.
"""

ENGAGEMENT_ACTIONS: tuple[str, ...] = ("CLOSEUP", "CLICK", "SAVE", "SHARE")
CONVERSION_ACTIONS: tuple[str, ...] = ("PAGE_VISIT", "ADD_TO_CART", "SIGNUP", "CHECKOUT")
AGE_BUCKETS: tuple[str, ...] = (
    "AGE_UNKNOWN",
    "AGE_UNDER_18",
    "AGE_18_24",
    "AGE_25_34",
    "AGE_35_44",
    "AGE_45_54",
    "AGE_55_PLUS",
)
GENDERS: tuple[str, ...] = ("UNKNOWN", "FEMALE", "MALE", "OTHER")
MAX_INTERESTS_PER_PIN = 3

# A pin carries a fixed number of interest slots; empty slots hold PAD_INTEREST (confidence
# 0) and a pin missing from the pins table gets UNKNOWN_INTEREST, as training saw it.
INTEREST_SLOTS = MAX_INTERESTS_PER_PIN
PAD_INTEREST = -1
UNKNOWN_INTEREST = -2

DEFAULT_MODEL_NAME = "two_tower"

# Feature views: name -> features, in declaration order.
USER_HISTORY_STATE = "user_history_state"
USER_PROFILE = "user_profile"
PIN_PROFILE = "pin_profile"
USER_REALTIME_SEQ = "user_realtime_seq"
PIN_ENGAGEMENT = "pin_engagement"
VIEW_FEATURES: dict[str, tuple[str, ...]] = {
    USER_HISTORY_STATE: ("hidden", "history_len", "last_event_ts_ms"),
    USER_PROFILE: ("age_bucket", "gender", "country", "segment"),
    PIN_PROFILE: ("interest_ids", "interest_confidences", "image_signature"),
    USER_REALTIME_SEQ: ("pin_ids", "event_ts_ms", "actions", "updated_ts_ms"),
    PIN_ENGAGEMENT: (*(f"decayed_{a.lower()}" for a in ENGAGEMENT_ACTIONS), "last_event_ts_ms"),
}
BATCH_VIEWS = (USER_HISTORY_STATE, USER_PROFILE, PIN_PROFILE)
STREAM_VIEWS = (USER_REALTIME_SEQ, PIN_ENGAGEMENT)
FRESHNESS_TAG = "freshness_target_s"  # tag on every view: its freshness target, seconds
WRITTEN_BY_TAG = "written_by"
# On pin_engagement: the half-life (seconds) its counts decay with; the stream worker
# records the one it runs with, readers decay the counts forward with it.
HALF_LIFE_TAG = "half_life_s"

# Lake tables the profile views are loaded from: lake table -> (view, its columns).
PROFILE_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "users": (USER_PROFILE, ("user_id", *VIEW_FEATURES[USER_PROFILE])),
    "pins": (PIN_PROFILE, ("pin_id", *VIEW_FEATURES[PIN_PROFILE])),
}
