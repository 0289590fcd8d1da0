"""A tiny lake with planted structure, written with pyarrow and the lake contracts.

Pins belong to one of K interests (popularity Zipf within it); each user favours two
interests; a user's next conversion keeps the previous event's interest with
probability 0.7, so both the history and the subject pin predict the next pin.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.arrow import ENGAGEMENT, OFFSITE_CONVERSION, PIN_PROFILE, USER_PROFILE
from towerline.core.contracts import AGE_BUCKETS, CONVERSION_ACTIONS, ENGAGEMENT_ACTIONS, GENDERS

END = dt.date(2025, 6, 30)
DAY_MS = 86_400_000


def _events(rng, users, interest_of_pin, favs, per_user, days, sticky):
    """(user, pin, ts_ms) of a sticky interest chain per user."""
    k = int(interest_of_pin.max()) + 1
    by_interest = [np.flatnonzero(interest_of_pin == i) for i in range(k)]
    first_ms = int(
        dt.datetime.combine(END - dt.timedelta(days=days - 1), dt.time(), dt.UTC).timestamp() * 1000
    )
    rows = []
    for u in range(users):
        n = max(int(rng.poisson(per_user)), 3)
        times = np.sort(rng.integers(0, days * DAY_MS, n)) + first_ms
        current = favs[u, 0]
        for t in times:
            if rng.random() > sticky:
                current = favs[u, rng.integers(0, 2)] if rng.random() < 0.9 else rng.integers(0, k)
            pool = by_interest[current]
            weights = 1.0 / np.arange(1, len(pool) + 1) ** 1.1
            pin = pool[rng.choice(len(pool), p=weights / weights.sum())]
            rows.append((u + 1, pin + 1, int(t)))
    return np.array(rows, dtype=np.int64)


def _write_events(lake: Path, table: str, schema, rows, actions, prefix: str, rng) -> None:
    days = (rows[:, 2] // DAY_MS).astype(np.int64)
    for day in np.unique(days):
        part = rows[days == day]
        date = dt.date(1970, 1, 1) + dt.timedelta(days=int(day))
        out = lake / table / f"dt={date.isoformat()}"
        out.mkdir(parents=True, exist_ok=True)
        tbl = pa.table(
            {
                "event_id": [f"{prefix}{day}-{i}" for i in range(len(part))],
                "user_id": part[:, 0],
                "pin_id": part[:, 1],
                "action": [actions[i] for i in rng.integers(0, len(actions), len(part))],
                "event_ts": pa.array(part[:, 2], type=pa.timestamp("ms", tz="UTC")),
            }
        ).cast(schema)
        pq.write_table(tbl, out / "part-0.parquet")


def write_tiny_lake(
    lake: Path, users=300, pins=400, interests=8, days=10, per_user=25, seed=0
) -> Path:
    """Write offsite_conversions, engagements, pins and users under ``lake``."""
    rng = np.random.default_rng(seed)
    interest_of_pin = rng.integers(0, interests, pins)
    favs = np.stack([rng.integers(0, interests, users), rng.integers(0, interests, users)], 1)
    offsite = _events(rng, users, interest_of_pin, favs, per_user, days, sticky=0.7)
    engaged = _events(rng, users, interest_of_pin, favs, per_user / 3, days, sticky=0.5)
    _write_events(
        lake, "offsite_conversions", OFFSITE_CONVERSION, offsite, CONVERSION_ACTIONS, "o", rng
    )
    _write_events(lake, "engagements", ENGAGEMENT, engaged, ENGAGEMENT_ACTIONS, "e", rng)
    second = (interest_of_pin + 1) % interests
    updated = pa.array(np.full(pins, 0), type=pa.timestamp("ms", tz="UTC"))
    pin_tbl = pa.table(
        {
            "pin_id": np.arange(1, pins + 1),
            "interest_ids": [
                [int(a), int(b)] for a, b in zip(interest_of_pin, second, strict=True)
            ],
            "interest_confidences": [[0.9, 0.3]] * pins,
            "image_signature": [f"{i:016x}" for i in range(pins)],
            "updated_ts": updated,
        }
    ).cast(PIN_PROFILE)
    (lake / "pins").mkdir(parents=True, exist_ok=True)
    pq.write_table(pin_tbl, lake / "pins" / "part-0.parquet")
    user_tbl = pa.table(
        {
            "user_id": np.arange(1, users + 1),
            "age_bucket": [AGE_BUCKETS[i % len(AGE_BUCKETS)] for i in range(users)],
            "gender": [GENDERS[i % len(GENDERS)] for i in range(users)],
            "country": [["US", "DE", "BR"][i % 3] for i in range(users)],
            "segment": [["casual", "pro"][i % 2] for i in range(users)],
            "updated_ts": pa.array(np.full(users, 0), type=pa.timestamp("ms", tz="UTC")),
        }
    ).cast(USER_PROFILE)
    (lake / "users").mkdir(parents=True, exist_ok=True)
    pq.write_table(user_tbl, lake / "users" / "part-0.parquet")
    return lake


@pytest.fixture(scope="session")
def tiny_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_lake(tmp_path_factory.mktemp("lake"))
