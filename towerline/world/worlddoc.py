"""The world.json document: every parameter and the planted truth an oracle needs.

Small truth is inline; per-user and per-pin truth lives in Parquet files it references.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from towerline.world.config import WorldConfig
from towerline.world.pins import Catalog
from towerline.world.users import DEMOGRAPHICS

FORMAT = "towerline.world/1"

# How the planted structure reads back from the truth files (for oracles and humans).
MODEL_NOTES = {
    "day_index": "d = (date - first_date).days, 0..days-1",
    "user_mixture": "on day d: w ∝ weights * exp(d * drift), over the user's interest_ids",
    "offsite_sequence": (
        "per user, time-ordered; each event keeps the previous event's latent interest with "
        "probability stickiness, else draws it from the day's mixture; then with probability "
        "noise_rate the shown pin comes from an interest drawn from interests.prior instead"
    ),
    "engagement_sequence": (
        "same process, Poisson(engagement_rate * activity) per user-day, plus the session "
        "engagements below"
    ),
    "session": (
        "a session_rate share of the offsite conversions (those at least 2 s into their UTC "
        "day) follow 1..session_engagements on-platform engagements (uniform), the newest "
        "2 s + Exp(mean session_gap_s) before the conversion, each earlier one a further "
        "Exp(mean session_gap_s) back, never before the conversion's UTC day. The session's "
        "intent: with probability session_explore an interest drawn from interests.prior, "
        "else the chain's interest at the conversion. The session's pins (no noise) and the "
        "conversion's pin (noise_rate applies) are drawn from it; the chain goes on unaffected"
    ),
    "conversion_truth": (
        "truth/conversions: one row per offsite conversion, in lake order; event_id joins "
        "offsite_conversions. interest = the planted intent (session intent or chain); "
        "shown_interest = the interest its pin was drawn from (interest unless noise); "
        "chain_interest = the long-term sticky chain at that time; session/explore flags; "
        "session_engagements = how many; session_event_id / session_gap_ms = the newest "
        "session engagement (null without a session). towerline.world.oracle scores pins "
        "from it"
    ),
    "pin_draw": (
        "within interest k on day d: ∝ popularity * confidence_k^2, plus for trending pins "
        "trending_peak_share * (base mass of k) * confidence_k^2 * exp(-(d-peak)^2/(2 width^2))"
    ),
    "popularity": "rank ** -zipf_exponent, rank within the pin's primary interest",
    "duplicates": "truth/pins original_pin_id: same image_signature and interests as original",
    "user_interest_choice": (
        "Gumbel-top-k over log(interests.prior) + sum of demographics.effects[field][value]"
    ),
}


def world_doc(
    cfg: WorldConfig,
    catalog: Catalog,
    effects: dict[str, np.ndarray],
    per_day: dict[str, np.ndarray],
    truth: dict[str, str],
    sessions: dict[str, int],
) -> dict[str, Any]:
    """JSON-able dict; ``per_day`` maps event table -> (D,) event counts per day, ``truth``
    each truth table to its path, ``sessions`` session counts by name."""
    dates = [(cfg.first_date + dt.timedelta(days=d)).isoformat() for d in range(cfg.days)]
    dup = catalog.original >= 0
    return {
        "format": FORMAT,
        "config": cfg.to_json(),
        "first_date": dates[0],
        "end_date": dates[-1],
        "dates": dates,
        "ids": {
            "user_id": [1, cfg.users],
            "pin_id": [1, cfg.pins],
            "interest_id": [0, cfg.interests - 1],
        },
        "interests": {"count": cfg.interests, "prior": catalog.interest_prior.tolist()},
        "demographics": {
            "symbols": {name: list(symbols) for name, (symbols, _) in DEMOGRAPHICS.items()},
            "marginals": {name: p.tolist() for name, (_, p) in DEMOGRAPHICS.items()},
            "effects": {name: e.tolist() for name, e in effects.items()},
        },
        "duplicates": {
            "pins": int(dup.sum()),
            "groups": int(len(np.unique(catalog.original[dup]))),
        },
        "trending": [
            {"pin_id": int(p) + 1, "peak_day": dates[int(d)], "peak_day_index": int(d)}
            for p, d in zip(catalog.trending, catalog.peak_day, strict=True)
        ],
        "truth": dict(truth),
        "counts": {
            "offsite_events": int(per_day["offsite_conversions"].sum()),
            "engagement_events": int(per_day["engagements"].sum()),
            "offsite_per_day": per_day["offsite_conversions"].tolist(),
            "engagement_per_day": per_day["engagements"].tolist(),
            **sessions,
        },
        "model": MODEL_NOTES,
    }
