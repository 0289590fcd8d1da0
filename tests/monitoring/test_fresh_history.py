"""The history file: one JSON line per collection, appended atomically, torn lines skipped."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from monitor_kit import HOUR, NOW

from monitoring import history
from monitoring.model import LAG_EVENT_TIME, OK, Measure, SloResult, Snapshot


def _snapshot(i: int) -> Snapshot:
    lag = Measure("user_realtime_seq", LAG_EVENT_TIME, float(i), job="streams", partition="0", note="n")  # fmt: skip
    slo = SloResult("lag", "user_realtime_seq", LAG_EVENT_TIME, 60.0, "max", OK, float(i), "worst")
    return Snapshot(NOW + i * HOUR, (lag,), (slo,), ("serving h:1",), ("a note",), ages={"v": (1.0,)})  # fmt: skip


def test_round_trip_keeps_measures_and_drops_ages(tmp_path: Path) -> None:
    path = tmp_path / "h" / "history.jsonl"
    for i in range(3):
        history.append(path, _snapshot(i))
    back = history.read(path)
    assert [s.taken_at for s in back] == [NOW, NOW + HOUR, NOW + 2 * HOUR]
    assert back[1].measures == _snapshot(1).measures
    assert back[1].slos == _snapshot(1).slos and back[1].unreachable == ("serving h:1",)
    assert back[1].ages == {}
    assert [s.taken_at for s in history.read(path, limit=2)] == [NOW + HOUR, NOW + 2 * HOUR]


def test_a_torn_line_is_skipped_and_the_next_append_stands_alone(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    history.append(path, _snapshot(0))
    with open(path, "a") as handle:
        handle.write('{"history": 1, "taken_at": "2025-07-01T1')  # a writer killed mid-line
    history.append(path, _snapshot(1))
    assert [s.measures[0].value for s in history.read(path)] == [0.0, 1.0]


def test_a_value_json_cannot_hold_is_written_as_not_measured(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    snap = Snapshot(NOW, (Measure("index", "index_age_seconds", float("inf")),))
    history.append(path, snap)
    [back] = history.read(path)
    assert back.measures[0].value is None and "inf" in back.measures[0].note


def _writer(path: str, start: int) -> None:
    for i in range(start, start + 20):
        history.append(Path(path), _snapshot(i))


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    procs = [multiprocessing.Process(target=_writer, args=(str(path), k * 100)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert len(path.read_text().splitlines()) == 60
    assert len(history.read(path)) == 60


def test_a_missing_file_is_an_empty_history(tmp_path: Path) -> None:
    assert history.read(tmp_path / "nothing.jsonl") == []
