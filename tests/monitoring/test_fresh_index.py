"""The served index: its age, its corpus's age, and how far serving.json is behind."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from monitor_kit import HOUR, NOW, build_index, build_set, register, serve_pointer

from monitoring.collect import Sources, collect
from monitoring.model import (
    BEHIND_BUILT,
    BEHIND_REGISTERED,
    BREACH,
    CORPUS_AGE,
    INDEX_AGE,
    OK,
    SERVED_HAS_LATEST,
)


def _by(snapshot):
    return {m.measure: m for m in snapshot.measures if m.view in ("index", "serving")}


def _slo(snapshot, measure):
    [r] = [r for r in snapshot.slos if r.measure == measure]
    return r.status


def test_an_index_older_than_its_target_is_reported(tmp_path: Path) -> None:
    indexes, registry = tmp_path / "indexes", tmp_path / "registry"
    old = build_index(indexes, "v1", NOW - 30 * HOUR, dt.date(2025, 6, 29))
    build_index(indexes, "v2", NOW - 2 * HOUR, dt.date(2025, 6, 30))  # built, not published
    register(registry, "v1", "v2", "v3")
    serve_pointer(indexes, old, NOW - 29 * HOUR)
    snapshot = collect(Sources(indexes=indexes, registry=registry), clock=lambda: NOW)
    by = _by(snapshot)
    assert by[INDEX_AGE].value == 30 * 3600 and old.name in by[INDEX_AGE].note
    assert by[CORPUS_AGE].value == 36 * 3600  # engagements through 2025-06-29, now 07-01 12:00
    assert by[BEHIND_BUILT].value == 1 and by[BEHIND_REGISTERED].value == 2
    assert _slo(snapshot, INDEX_AGE) == BREACH and _slo(snapshot, CORPUS_AGE) == BREACH
    assert _slo(snapshot, BEHIND_BUILT) == OK  # one build ahead is normal
    # A candidate the retrain gate rejected is not a version serving is behind.
    (registry / "two_tower" / "v3" / "rejected.json").write_text('{"reason": "gate"}')
    again = _by(collect(Sources(indexes=indexes, registry=registry), clock=lambda: NOW))
    assert again[BEHIND_REGISTERED].value == 1


def test_a_fresh_index_holds_and_nothing_published_is_said(tmp_path: Path) -> None:
    indexes = tmp_path / "indexes"
    empty = collect(Sources(indexes=indexes), clock=lambda: NOW)
    assert _by(empty)[INDEX_AGE].value is None and "nothing published" in _by(empty)[INDEX_AGE].note
    build = build_index(indexes, "v1", NOW - HOUR, dt.date(2025, 6, 30))
    serve_pointer(indexes, build, NOW - HOUR)
    snapshot = collect(Sources(indexes=indexes), clock=lambda: NOW)
    assert _by(snapshot)[INDEX_AGE].value == 3600 and _slo(snapshot, INDEX_AGE) == OK
    assert _by(snapshot)[BEHIND_BUILT].value == 0


def test_served_version_without_states_for_the_latest_partition(tmp_path: Path) -> None:
    indexes, lake = tmp_path / "indexes", tmp_path / "lake"
    serve_pointer(indexes, build_index(indexes, "v1", NOW - HOUR, dt.date(2025, 6, 30)), NOW)
    for day, versions in (("2025-06-29", ("v1",)), ("2025-06-30", ("v2",))):
        for version in versions:
            folder = lake / "user_history_state" / f"dt={day}" / version
            folder.mkdir(parents=True)
            (folder / "part-0.parquet").write_bytes(b"PAR1")
    snapshot = collect(Sources(indexes=indexes, lake=lake), clock=lambda: NOW)
    [has] = [m for m in snapshot.measures if m.measure == SERVED_HAS_LATEST]
    assert has.value == 0 and "dt=2025-06-30" in has.note and "v1" in has.note
    (lake / "user_history_state" / "dt=2025-06-30" / "v1").mkdir()
    (lake / "user_history_state" / "dt=2025-06-30" / "v1" / "part-0.parquet").write_bytes(b"PAR1")
    snapshot = collect(Sources(indexes=indexes, lake=lake), clock=lambda: NOW)
    assert [m.value for m in snapshot.measures if m.measure == SERVED_HAS_LATEST] == [1.0]


def test_a_served_set_of_shards_counts_as_one_build_and_is_named(tmp_path: Path) -> None:
    indexes = tmp_path / "indexes"
    built = NOW - 2 * HOUR
    shard0 = build_set(indexes, "v1", built, dt.date(2025, 6, 30), count=3)
    serve_pointer(indexes, shard0, built)
    by = _by(collect(Sources(indexes=indexes), clock=lambda: NOW))
    assert by[INDEX_AGE].value == 2 * 3600
    assert "shard 0 of a set of 3" in by[INDEX_AGE].note
    assert by[BEHIND_BUILT].value == 0 and "1 builds" in by[BEHIND_BUILT].note
