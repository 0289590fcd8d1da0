"""Pure parts of the sources: histogram quantiles, lag, corpus time, host skew, table."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from monitor_kit import NOW

from monitoring.model import (
    BREACH,
    HOST_UP,
    HOST_VERSION,
    LAG_EVENT_TIME,
    LAG_OFFSETS,
    OK,
    ROW_AGE_P50,
    UNKNOWN,
    VERSION_SKEW,
    Measure,
    SloResult,
    Snapshot,
)
from monitoring.sources import hosts, rows, stream
from monitoring.sources.index import corpus_time
from monitoring.table import check_lines, render_table
from towerline.core.errors import UnavailableError
from towerline.core.stream_progress import PartitionProgress


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 10.0, 1.0: 90.0, math.inf: 100.0}
    assert hosts.histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.9 * (50 - 10) / 80)
    assert hosts.histogram_quantile(0.05, buckets) == pytest.approx(0.05)
    assert hosts.histogram_quantile(0.99, buckets) == 1.0  # rank in +Inf: the last finite bound
    assert hosts.histogram_quantile(0.5, {math.inf: 0.0}) is None


def test_worker_histograms_add_up_bucket_by_bucket() -> None:
    text = (
        "# TYPE towerline_stream_freshness_seconds histogram\n"
        'towerline_stream_freshness_seconds_bucket{le="0.5"} 8.0\n'
        'towerline_stream_freshness_seconds_bucket{le="1.0"} 10.0\n'
        'towerline_stream_freshness_seconds_bucket{le="+Inf"} 10.0\n'
        "towerline_stream_freshness_seconds_count 10.0\n"
        "towerline_stream_freshness_seconds_sum 3.0\n"
    )
    p50, p99 = hosts.worker_freshness_measures([text, text], ["w1:1", "w2:2"])
    assert p50.view == "pin_engagement" and p50.sample == 20
    assert p50.value == pytest.approx(0.5 * 10 / 8 * 0.5)  # rank 10 of 16 in the first bucket
    assert 0.5 < p99.value <= 1.0


def test_served_version_is_read_from_the_serving_gauge() -> None:
    text = (
        "# TYPE towerline_serving_model_version_info gauge\n"
        'towerline_serving_model_version_info{model_name="two_tower",model_version="v7"} 1.0\n'
    )
    assert hosts.served_version(text) == "v7"
    assert hosts.served_version("# nothing here\n") is None


def test_skew_is_max_minus_min_over_answering_hosts() -> None:
    out = hosts.host_measures({"a:1": "v2", "b:2": "v3", "c:3": UnavailableError("down")})
    by = {(m.measure, m.host): m.value for m in out}
    assert by[(HOST_VERSION, "a:1")] == 2 and by[(HOST_VERSION, "b:2")] == 3
    assert by[(HOST_UP, "c:3")] == 0 and (HOST_VERSION, "c:3") not in by
    assert by[(VERSION_SKEW, "")] == 1


def test_lag_by_offsets_and_by_event_time_per_partition() -> None:
    now_ms = int(NOW.timestamp() * 1000)
    progress = [
        PartitionProgress("t", 0, 9, now_ms - 5_000, now_ms),
        PartitionProgress("t", 1, -1, None, None),
    ]
    out = stream.lag_measures(progress, {0: 25, 1: 3, 2: 0}, now_ms, views=("user_realtime_seq",))
    by = {(m.measure, m.partition): m for m in out}
    assert by[(LAG_OFFSETS, "0")].value == 15  # end 25, next to apply 10
    assert "Tansu" in by[(LAG_OFFSETS, "0")].note
    assert by[(LAG_OFFSETS, "1")].value == 3 and by[(LAG_OFFSETS, "2")].value == 0
    assert by[(LAG_EVENT_TIME, "0")].value == 5.0
    assert by[(LAG_EVENT_TIME, "1")].value is None
    # Tansu's end offset can be below the applied one: never a negative lag.
    [low, _] = stream.lag_measures(progress[:1], {0: 3}, now_ms, views=("v",))
    assert low.value == 0


def test_corpus_time_is_the_end_of_its_day() -> None:
    when, note = corpus_time("corpus-20250629-abcdef0123", None)
    assert when == dt.datetime(2025, 6, 30, tzinfo=dt.UTC) and "2025-06-29" in note
    assert corpus_time(None, None)[0] is None


def test_row_ages_say_their_sample_size() -> None:
    now_ms = int(NOW.timestamp() * 1000)
    sampled = rows.Rows("user_profile", tuple(now_ms - s * 1000 for s in range(100)), 5000, False)
    p50, p99 = rows.row_age_measures(sampled, now_ms)
    assert p50.measure == ROW_AGE_P50 and p50.value == pytest.approx(49.5)
    assert p50.sample == 100 and p50.note == "sample 100 of 5000 rows"
    everything = rows.Rows("user_profile", (now_ms,), 1, True)
    assert rows.row_age_measures(everything, now_ms)[0].note == "all 1 rows"


def test_table_reads_in_human_units_and_names_samples_and_unreachable() -> None:
    measures = (
        Measure("user_profile", "run_age_seconds", 30 * 3600.0, job="load-profiles"),
        Measure("user_profile", ROW_AGE_P50, 0.041, sample=1000, note="sample 1000 of 9000 rows"),
        Measure(
            "user_history_state",
            "served_states_coverage_ratio",
            0.97,
            sample=500,
            note="sample 500 active users",
        ),  # fmt: skip
        Measure("user_realtime_seq", LAG_EVENT_TIME, None, partition="2", note="no event applied"),
    )
    slos = (
        SloResult(
            "user_profile_run_age",
            "user_profile",
            "run_age_seconds",
            93600.0,
            "max",
            BREACH,
            108000.0,
            "job load-profiles: 30h",
        ),  # fmt: skip
        SloResult("lag", "user_realtime_seq", LAG_EVENT_TIME, 60.0, "max", UNKNOWN, None, "x"),
        SloResult(
            "cov", "user_history_state", "served_states_coverage_ratio", 0.95, "min", OK, 0.97
        ),  # fmt: skip
    )
    snap = Snapshot(NOW, measures, slos, unreachable=("redis 127.0.0.1:1",))
    text = render_table(snap)
    assert "30 h" in text and "41 ms" in text and "97.0 %" in text
    assert "<= 26 h" in text and "BREACH" in text
    assert "sample 1000 of 9000 rows" in text and "unreachable: redis 127.0.0.1:1" in text
    assert "lag_seconds [partition 2]" in text
    assert check_lines(snap) == ["BREACH user_profile_run_age (user_profile run_age_seconds): job load-profiles: 30h"]  # fmt: skip
