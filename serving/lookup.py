"""`POST /v1/features`: any feature view through the same online reads, with row ages.

``pin_engagement`` counts are valid at ``last_event_ts_ms``; they are decayed forward to
the request time with the half-life the stream worker recorded on the view (tag
``half_life_s``), so two readers at the same instant see the same numbers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import feast

from towerline.core.contracts import (
    ENGAGEMENT_ACTIONS,
    HALF_LIFE_TAG,
    PIN_ENGAGEMENT,
    PIN_PROFILE,
    USER_HISTORY_STATE,
    VIEW_FEATURES,
)
from towerline.core.errors import InputError

PIN_VIEWS = (PIN_PROFILE, PIN_ENGAGEMENT)


def join_keys(view: str, entity: dict[str, Any], served_version: str | None) -> dict[str, Any]:
    """The entity row Feast needs for ``view``; ``InputError`` naming the missing key."""
    key = "pin_id" if view in PIN_VIEWS else "user_id"
    if not isinstance(entity.get(key), int):
        raise InputError(f"entities: {view} rows need an integer {key}, got {entity}")
    row = {key: entity[key]}
    if view == USER_HISTORY_STATE:
        version = entity.get("model_version", served_version)
        if not isinstance(version, str):
            raise InputError("entities: user_history_state rows need a model_version")
        row["model_version"] = version
    return row


def lookup(
    store: feast.FeatureStore, view: str, rows: list[dict[str, Any]], now: dt.datetime
) -> list[dict[str, Any]]:
    """One Feast read of ``view`` for ``rows`` -> one answer per row."""
    names = VIEW_FEATURES[view]
    refs = [f"{view}:{name}" for name in names]
    found = store.get_online_features(features=refs, entity_rows=rows).to_dict(True)
    answers = []
    for i, row in enumerate(rows):
        values = {name: found[name][i] for name in names}
        seconds = [found[f"{name}__ts"][i] for name in names if found[name][i] is not None]
        stamp = max(seconds) if seconds else None
        when = dt.datetime.fromtimestamp(stamp, dt.UTC) if stamp else None
        if view == PIN_ENGAGEMENT and when is not None:
            values = decayed_to(values, now, half_life_s(store))
        answers.append(
            {
                "entity": row,
                "found": when is not None,
                "features": values,
                "event_timestamp": when.isoformat() if when else None,
                "age_s": (now - when).total_seconds() if when else None,
            }
        )
    return answers


def half_life_s(store: feast.FeatureStore) -> float | None:
    """The half-life the stream worker recorded on pin_engagement (None if unrecorded)."""
    tag = store.get_feature_view(PIN_ENGAGEMENT).tags.get(HALF_LIFE_TAG)
    return float(tag) if tag else None


def decayed_to(values: dict[str, Any], now: dt.datetime, half_life: float | None) -> dict[str, Any]:
    """Counts valid at ``last_event_ts_ms`` decayed to ``now`` (when the half-life is known)."""
    last_ms = values.get("last_event_ts_ms")
    if not half_life or last_ms is None:
        return {**values, "decayed_to": None}
    age_s = max(0.0, now.timestamp() - last_ms / 1000)
    factor = 0.5 ** (age_s / float(half_life))
    out = dict(values)
    for action in ENGAGEMENT_ACTIONS:
        name = f"decayed_{action.lower()}"
        if out.get(name) is not None:
            out[name] = out[name] * factor
    out["decayed_to"] = now.isoformat()
    return out
