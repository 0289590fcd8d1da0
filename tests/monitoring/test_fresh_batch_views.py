"""Batch views are as fresh as the last *successful* run that wrote them (the run ledger)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

from monitor_kit import HOUR, NOW, record

from monitoring.collect import Sources, collect
from monitoring.model import BREACH, OK, RUN_AGE
from monitoring.table import check_lines
from tests.cli.cli_kit import assert_user_error, towerline, towerline_here
from towerline.core.contracts import PIN_PROFILE, USER_HISTORY_STATE, USER_PROFILE
from towerline.core.ledger import FAILED, SUCCESS


def _run_age(snapshot, view):
    [m] = [m for m in snapshot.measures if m.view == view and m.measure == RUN_AGE]
    return m


def _status(snapshot, view):
    [r] = [r for r in snapshot.slos if r.view == view and r.measure == RUN_AGE]
    return r.status


def test_a_stopped_writer_breaches_and_a_recent_one_holds(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    record(ledger, "load-profiles", SUCCESS, NOW - 30 * HOUR)  # its writer stopped a day ago
    record(ledger, "batch encode", SUCCESS, NOW - 2 * HOUR)
    snapshot = collect(Sources(ledger=ledger), clock=lambda: NOW)
    assert _run_age(snapshot, USER_PROFILE).value == 30 * 3600
    assert _run_age(snapshot, USER_PROFILE).job == "load-profiles"
    assert _run_age(snapshot, USER_HISTORY_STATE).value == 2 * 3600
    assert _status(snapshot, USER_PROFILE) == BREACH and _status(snapshot, PIN_PROFILE) == BREACH
    assert _status(snapshot, USER_HISTORY_STATE) == OK
    lines = check_lines(snapshot)
    assert any("user_profile" in line for line in lines)
    assert not any("user_history_state_run_age" in line for line in lines)


def test_a_failed_run_after_an_old_success_is_not_fresh(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    record(ledger, "batch encode", SUCCESS, NOW - 40 * HOUR)
    record(ledger, "batch encode", FAILED, NOW - 1 * HOUR)  # the newest run failed
    snapshot = collect(Sources(ledger=ledger), clock=lambda: NOW)
    age = _run_age(snapshot, USER_HISTORY_STATE)
    assert age.value == 40 * 3600, "the failure must not count as a run"
    assert "failed" in age.note
    assert _status(snapshot, USER_HISTORY_STATE) == BREACH


def test_a_view_never_written_is_infinitely_old_and_fails_check(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    record(ledger, "batch encode", FAILED, NOW - 1 * HOUR)  # only a failure: never fresh
    snapshot = collect(Sources(ledger=ledger), clock=lambda: NOW)
    age = _run_age(snapshot, USER_HISTORY_STATE)
    assert age.value == math.inf and "no successful run" in age.note
    assert _status(snapshot, USER_HISTORY_STATE) == BREACH
    assert any("user_history_state_run_age" in line for line in check_lines(snapshot))


def test_check_exits_1_naming_the_stale_view(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    now = dt.datetime.now(dt.UTC)
    record(ledger, "load-profiles", SUCCESS, now - dt.timedelta(hours=30))
    record(ledger, "batch encode", SUCCESS, now - dt.timedelta(hours=1))
    history = tmp_path / "history.jsonl"
    common = ["--ledger", ledger, "--history", history, "--online", "sqlite"]
    common += ["--data-dir", tmp_path / "feast", "--project", "tl_mon_check"]
    ran = towerline("freshness", "check", *common)
    assert ran.code == 1, str(ran)
    breached = ran.stdout.splitlines()
    assert any(line.startswith("BREACH user_profile_run_age") for line in breached), str(ran)
    assert any("pin_profile" in line for line in breached), str(ran)
    assert not any("user_history_state_run_age" in line for line in breached), str(ran)
    assert "Traceback" not in ran.stderr, str(ran)
    table = towerline_here("freshness", *common)  # in process: the first run showed the CLI
    assert table.code == 0, str(table)
    assert "user_profile" in table.stdout and "30 h" in table.stdout, str(table)
    assert "BREACH" in table.stdout
    assert len(history.read_text().splitlines()) == 2  # each run appended its snapshot


def test_report_writes_the_page_and_appends_the_history(tmp_path: Path) -> None:
    ledger, history, out = tmp_path / "ledger.jsonl", tmp_path / "h.jsonl", tmp_path / "r" / "report.html"  # fmt: skip
    record(ledger, "batch encode", SUCCESS, dt.datetime.now(dt.UTC) - dt.timedelta(hours=3))
    common = ["--ledger", ledger, "--history", history, "--online", "sqlite"]
    common += ["--data-dir", tmp_path / "feast", "--project", "tl_mon_report"]
    for run in (towerline, towerline_here):  # a real process, then in process (quicker)
        ran = run("freshness", "report", "--out", out, *common)
        assert ran.code == 0, str(ran)
    assert str(out) in ran.stdout
    page = out.read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "user_history_state" in page
    assert len(history.read_text().splitlines()) == 2
    assert not list(out.parent.glob(".*.tmp"))  # written atomically: no temporary left


def test_options_before_the_command_are_refused_not_ignored(tmp_path: Path) -> None:
    ran = towerline("freshness", "--ledger", tmp_path / "l.jsonl", "check")
    assert_user_error(ran, 2, "--ledger", "after the command")
