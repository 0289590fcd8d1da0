"""The run ledger: whole lines under concurrent writers, torn tails skipped and repaired,
and a run that records success only when it said so."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
from pathlib import Path

import pytest

from towerline.core import ledger
from towerline.core.errors import RefusedError
from towerline.core.ledger import FAILED, INTERRUPTED, SUCCESS, RunRecord

T0 = dt.datetime(2025, 7, 1, 2, 0, tzinfo=dt.UTC)
DAY = dt.date(2025, 6, 30)
WRITERS, EACH = 4, 50


def record(job: str = "batch encode", outcome: str = SUCCESS, minutes: int = 0, **more):
    at = T0 + dt.timedelta(minutes=minutes)
    return RunRecord(job=job, outcome=outcome, started_at=at, finished_at=at, **more)


def _append_many(path: str, writer: int) -> None:
    for i in range(EACH):
        # Long lines make a split write likelier if appends were not atomic.
        extra = {"writer": writer, "i": i, "pad": "x" * (2000 + 97 * writer)}
        ledger.append(Path(path), record(partition=DAY, rows=i, extra=extra))


def test_appends_from_several_processes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ctx = multiprocessing.get_context("spawn")  # no fork of a threaded test process
    procs = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(WRITERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == WRITERS * EACH
    docs = [json.loads(line) for line in lines]  # every line is one whole record
    seen = sorted((d["extra"]["writer"], d["extra"]["i"]) for d in docs)
    assert seen == [(w, i) for w in range(WRITERS) for i in range(EACH)]
    assert len(ledger.read(path)) == WRITERS * EACH


def test_a_record_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "ledger.jsonl"  # the directory is created
    rec = record(
        partition=DAY, model_name="two_tower", model_version="v2", rows=7, output="/x", views=("a",)
    )
    ledger.append(path, rec)
    assert ledger.read(path) == [rec]
    assert ledger.read(tmp_path / "missing.jsonl") == []


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_its_own_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.jsonl"
    first, second = record(minutes=1), record(job="batch corpus", minutes=2)
    ledger.append(path, first)
    whole = record(job="publish").to_json()
    with path.open("a") as f:
        f.write(whole[: len(whole) // 2])  # a writer killed mid-line
    assert ledger.read(path) == [first]
    ledger.append(path, second)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[2] == second.to_json()
    assert ledger.read(path) == [first, second]


def test_foreign_lines_are_skipped_and_unknown_fields_ignored(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    newer = json.loads(record(minutes=3).to_json()) | {"added_later": 1}
    path.write_text("\n".join(["null", "[1]", "{}", "not json", json.dumps(newer)]) + "\n")
    [rec] = ledger.read(path)
    assert rec.finished_at == T0 + dt.timedelta(minutes=3)


def test_an_unwritable_ledger_is_a_ledger_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ledger.LedgerError, match="cannot append to the run ledger"):
        ledger.append(tmp_path / "file" / "ledger.jsonl", record())


def test_a_run_records_success_only_after_succeeded(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with ledger.Run(path, "batch corpus", partition=DAY) as run:
        assert ledger.read(path) == []  # nothing while it runs: a killed run leaves nothing
        run.succeeded(rows=12, output="/corpus/c1", snapshot_id="c1")
    [rec] = ledger.read(path)
    assert (rec.job, rec.outcome, rec.rows, rec.output) == (
        "batch corpus",
        SUCCESS,
        12,
        "/corpus/c1",
    )
    assert rec.partition == DAY and rec.extra == {"snapshot_id": "c1"} and rec.error is None
    assert rec.started_at <= rec.finished_at

    with ledger.Run(path, "batch corpus", partition=DAY):
        pass  # ended without saying it published
    assert ledger.read(path)[-1].outcome == FAILED


def test_load_profiles_and_encode_name_the_views_they_make_fresh(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with ledger.Run(path, "load-profiles") as run:
        run.succeeded(rows=3)
    with ledger.Run(path, "batch encode", model_version=None) as run:
        run.succeeded(rows=2, model_version="v2")
    profiles, encode = ledger.read(path)
    assert profiles.views == ("user_profile", "pin_profile")
    assert encode.views == ("user_history_state",) and encode.model_version == "v2"


def test_an_exception_records_failed_with_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with pytest.raises(RefusedError), ledger.Run(path, "publish", model_version="v3") as run:
        run.succeeded(rows=1)  # an error after it still fails the run
        raise RefusedError("v3 has no index\nbuild it first")
    [rec] = ledger.read(path)
    assert (rec.outcome, rec.error, rec.model_version) == (FAILED, "v3 has no index", "v3")


def test_ctrl_c_records_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with pytest.raises(KeyboardInterrupt), ledger.Run(path, "batch index"):
        raise KeyboardInterrupt

    class JobInterrupted(RefusedError):  # as batch.encode_job.EncodeInterrupted: exit 130
        exit_code = 130

    with pytest.raises(JobInterrupted), ledger.Run(path, "batch encode"):
        raise JobInterrupted("interrupted: stopped before publishing")
    first, second = ledger.read(path)
    assert (first.outcome, first.error) == (INTERRUPTED, "KeyboardInterrupt")
    assert (second.outcome, second.error) == (INTERRUPTED, "interrupted: stopped before publishing")


def test_an_unwritable_ledger_does_not_hide_the_steps_own_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    nowhere = tmp_path / "file" / "ledger.jsonl"
    with pytest.raises(RefusedError) as caught, ledger.Run(nowhere, "publish"):
        raise RefusedError("refused")
    assert "cannot append" in "".join(caught.value.__notes__)
    with pytest.raises(ledger.LedgerError), ledger.Run(nowhere, "publish") as run:
        run.succeeded()  # published but unrecorded: said, not swallowed


def test_a_run_without_a_path_records_nothing(tmp_path: Path) -> None:
    with ledger.Run(None, "rollback") as run:
        run.succeeded(model_version="v1")
    assert run.record is not None and run.record.outcome == SUCCESS
    assert list(tmp_path.iterdir()) == []


def test_unknown_jobs_and_outcomes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown ledger job"):
        record(job="batch everything")
    with pytest.raises(ValueError, match="unknown outcome"):
        record(outcome="maybe")


def test_last_filters() -> None:
    recs = [
        record("batch encode", SUCCESS, 1, model_version="v1", partition=DAY),
        record("batch encode", SUCCESS, 2, model_version="v2", partition=DAY),
        record("batch encode", FAILED, 3, model_version="v2", partition=DAY),
        record("batch encode", SUCCESS, 4, model_version="v1", partition=DAY.replace(day=29)),
        record("batch corpus", SUCCESS, 5, partition=DAY),
    ]
    assert ledger.last(recs) is recs[4]
    assert ledger.last(recs, job="batch encode") is recs[3]
    assert ledger.last(recs, job="batch encode", outcome=None) is recs[3]
    assert ledger.last(recs, job="batch encode", partition=DAY) is recs[1]
    assert ledger.last(recs, job="batch encode", partition=DAY, outcome=None) is recs[2]
    assert ledger.last(recs, job="batch encode", outcome=FAILED) is recs[2]
    assert ledger.last(recs, model_version="v1", partition=DAY) is recs[0]
    assert ledger.last(recs, view="user_history_state") is None  # views come with a Run
    assert ledger.last(recs, job="publish") is None
    assert ledger.last([]) is None


def test_facts_of_each_step() -> None:
    encode = {"rows": 5, "offline_path": "/l/s", "model_version": "v2", "events": 9}
    assert ledger.facts("batch encode", encode) == {
        "rows": 5,
        "output": "/l/s",
        "model_version": "v2",
        "events": 9,
        "online_rows": None,
        "online": None,
    }
    profiles = ledger.facts("load-profiles", {"user_profile": 2, "pin_profile": 3}, output="o")
    assert profiles == {
        "rows": 5,
        "view_rows": {"user_profile": 2, "pin_profile": 3},
        "output": "o",
    }
    doc = {"model_version": "v1", "dir": "v1-x", "previous": {"model_version": "v2"}}
    assert ledger.facts("rollback", doc, output="/s.json")["previous_version"] == "v2"
