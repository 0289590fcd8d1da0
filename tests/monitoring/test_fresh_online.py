"""Measures over a real online store (SQLite and Redis): row ages with their sample size,
user_realtime_seq's pipeline freshness, and the served version's state coverage."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import feast
import pyarrow as pa
import pytest
from monitor_kit import NOW, build_index, serve_pointer

from monitoring.collect import Sources, collect
from monitoring.model import (
    DATA_AGE,
    PIPELINE_FRESHNESS_P50,
    PIPELINE_FRESHNESS_P99,
    ROW_AGE_P50,
    ROW_AGE_P99,
    STATES_COVERAGE,
)
from towerline.core.featurestore import write_online

USERS = 40
MS = 1000


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * MS)


def fill(store: feast.FeatureStore) -> None:
    """USERS users with profiles (1 h old) and real-time rows written 2 s after their newest
    event (10 s old); history states of v1 for the even users only."""
    users = list(range(USERS))
    written = NOW - dt.timedelta(hours=1)
    write_online(store, "user_profile", pa.table({
        "user_id": users, "age_bucket": ["AGE_25_34"] * USERS, "gender": ["FEMALE"] * USERS,
        "country": ["FR"] * USERS, "segment": ["s"] * USERS, "updated_ts": [written] * USERS,
    }))  # fmt: skip
    newest = NOW - dt.timedelta(seconds=10)
    write_online(store, "user_realtime_seq", pa.table({
        "user_id": users,
        "pin_ids": [[1, 2]] * USERS,
        "event_ts_ms": [[_ms(newest) - 5 * MS, _ms(newest)]] * USERS,
        "actions": [["CLICK", "SAVE"]] * USERS,
        "updated_ts_ms": [_ms(newest) + 2 * MS] * USERS,
        "event_timestamp": [newest] * USERS,
    }))  # fmt: skip
    even = users[::2]
    write_online(store, "user_history_state", pa.table({
        "user_id": even, "model_version": ["v1"] * len(even),
        "hidden": [[0.1, 0.2]] * len(even), "history_len": pa.array([3] * len(even), pa.int32()),
        "last_event_ts_ms": [_ms(newest)] * len(even),
        "event_timestamp": [NOW - dt.timedelta(hours=12)] * len(even),
    }))  # fmt: skip


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_row_measures_with_sample_sizes(kind: str, feast_store, request, tmp_path: Path) -> None:
    if kind == "redis":
        request.getfixturevalue("redis_client")  # fail without Redis; our keys deleted after
    store = feast_store(kind)
    fill(store)
    indexes = tmp_path / "indexes"
    serve_pointer(indexes, build_index(indexes, "v1", NOW, dt.date(2025, 6, 30)), NOW)
    snapshot = collect(Sources(store=store, indexes=indexes, sample=25), clock=lambda: NOW)
    assert snapshot.unreachable == ()
    by = {(m.view, m.measure): m for m in snapshot.measures}
    age = by[("user_profile", ROW_AGE_P50)]
    assert age.value == pytest.approx(3600) and age.sample == 25
    assert age.note.startswith("sample 25 "), age.note
    assert by[("user_profile", ROW_AGE_P99)].value == pytest.approx(3600)
    assert by[("user_realtime_seq", PIPELINE_FRESHNESS_P50)].value == pytest.approx(2.0)
    assert by[("user_realtime_seq", PIPELINE_FRESHNESS_P99)].value == pytest.approx(2.0)
    assert by[("user_realtime_seq", DATA_AGE)].value == pytest.approx(10.0)
    # Only v1's rows are sampled for user_history_state, and there are 20 of them.
    assert by[("user_history_state", ROW_AGE_P50)].note == "all 20 rows"
    coverage = by[("user_history_state", STATES_COVERAGE)]
    assert coverage.sample == 25 and 0.2 <= coverage.value <= 0.8  # about half: even users
    assert "sample 25" in coverage.note and "user_realtime_seq" in coverage.note
    assert len(snapshot.ages["user_profile"]) == 25
    assert by[("pin_engagement", ROW_AGE_P50)].value is None  # no pins online: said, not 0
    assert by[("pin_engagement", PIPELINE_FRESHNESS_P50)].value is None
    assert "--stream-metrics" in by[("pin_engagement", PIPELINE_FRESHNESS_P50)].note


def test_coverage_counts_exactly_on_an_exhaustive_sample(feast_store) -> None:
    store = feast_store("sqlite")
    fill(store)
    from monitoring.sources.online import states_found

    assert states_found(store, list(range(USERS)), "v1") == USERS // 2
    assert states_found(store, list(range(USERS)), "v2") == 0
