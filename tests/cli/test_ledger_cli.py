"""Every batch step run through the real CLI records itself in the run ledger (issue #10):
one success with the facts the monitor needs, a failure for a refused step, and nothing
but a readable ledger after a job killed mid-run.

Works on the tiny world and one-version registry of ``test_errors_batch`` (private copies).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch.interrupt import descendants
from model.artifacts import TwoTower, save_model
from model.config import ModelConfig
from model.lake_io import read_pins
from tests.batch.conftest import TINY_MODEL
from tests.cli import test_errors_batch as errors_batch
from tests.cli.cli_kit import ROOT, assert_user_error, child_env, towerline, towerline_here
from tests.cli.test_errors_batch import END, IN_MEMORY, WINDOW, _workers, encode_cmd
from towerline.core import ledger
from towerline.core.ledger import FAILED, INTERRUPTED, SUCCESS, RunRecord

# Its tiny world and registry (built once for this module too), as private copies.
world = errors_batch.world
world_registry = errors_batch.world_registry
lake = errors_batch.lake
registry = errors_batch.registry


@pytest.fixture
def ledger_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's ledger, named by TOWERLINE_LEDGER as a user would."""
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("TOWERLINE_LEDGER", str(path))
    return path


def run_ok(*args: str | Path) -> dict:
    ran = towerline_here(*args)
    assert ran.code == 0, str(ran)
    return json.loads(ran.stdout.strip().splitlines()[-1])


def one_more(path: Path, before: int) -> RunRecord:
    """The one record the step appended, which must be a success."""
    records = ledger.read(path)
    assert len(records) == before + 1, records
    assert records[-1].outcome == SUCCESS and records[-1].error is None, records[-1]
    assert records[-1].pid == os.getpid()  # this process ran it: towerline_here
    return records[-1]


def test_each_step_appends_one_success_with_its_facts(
    lake: Path, registry: Path, ledger_file: Path, tmp_path: Path
) -> None:
    feast = ["--data-dir", tmp_path / "feast", "--project", f"led_{uuid.uuid4().hex[:8]}"]
    applied = towerline_here("features", "apply", *feast, "--lake", lake)
    assert applied.code == 0, str(applied)
    assert ledger.read(ledger_file) == []  # apply is no batch step

    counts = run_ok("features", "load-profiles", "--lake", lake, *feast, "--no-progress")
    rec = one_more(ledger_file, 0)
    assert (rec.job, rec.rows, rec.output) == ("load-profiles", 50 + 64, f"sqlite:{feast[3]}")
    assert rec.extra["view_rows"] == counts == {"user_profile": 50, "pin_profile": 64}
    assert rec.views == ("user_profile", "pin_profile")

    summary = run_ok(*encode_cmd(lake, registry), *IN_MEMORY)  # --version latest
    rec = one_more(ledger_file, 1)
    states = lake / "user_history_state" / f"dt={END}" / "v1"
    assert (rec.job, rec.partition, rec.model_name) == ("batch encode", END, "two_tower")
    assert rec.model_version == "v1"  # resolved, never "latest"
    assert rec.output == str(states) and states.is_dir()
    users = pq.read_table(states, columns=["user_id"]).column("user_id").to_pylist()
    assert rec.rows == summary["rows"] == len(set(users)) > 0
    assert rec.views == ("user_history_state",)

    corpus = ["batch", "corpus", "--lake", lake, "--dt", str(END), "--half-life", "7d"]
    manifest = run_ok(*corpus, "--top-m", "20", *IN_MEMORY)
    rec = one_more(ledger_file, 2)
    snapshot = Path(rec.output)
    on_disk = json.loads((snapshot / "manifest.json").read_text())
    assert (rec.job, rec.partition, rec.model_version) == ("batch corpus", END, None)
    assert snapshot == lake / "corpus" / manifest["snapshot_id"]
    assert rec.rows == on_disk["num_items"] and 0 < rec.rows <= 20
    assert rec.extra["snapshot_id"] == on_disk["snapshot_id"]

    indexes = tmp_path / "indexes"
    index = ["batch", "index", "--corpus", lake, "--registry", registry, "--indexes", indexes]
    run_ok(*index, "--threads", "1", "--ef-search", "50", *IN_MEMORY)
    rec = one_more(ledger_file, 3)
    built = json.loads((Path(rec.output) / "metadata.json").read_text())
    assert (rec.job, rec.model_version, rec.partition) == ("batch index", "v1", None)
    assert Path(rec.output).parent == indexes / "two_tower"
    assert rec.rows == built["num_items"] == on_disk["num_items"]
    assert rec.extra["corpus_snapshot"] == on_disk["snapshot_id"]
    assert rec.extra["built_at"] == built["built_at"]

    serving = indexes / "two_tower" / "serving.json"
    publish = ["--registry", registry, "--indexes", indexes, "--lake", lake, "--no-online-check"]
    run_ok("publish", "--version", "v1", *publish)
    rec = one_more(ledger_file, 4)
    assert (rec.job, rec.model_version, rec.output) == ("publish", "v1", str(serving))
    assert rec.extra["index_dir"] == json.loads(serving.read_text())["dir"]
    assert rec.extra["previous_version"] is None and rec.extra["states_partition"] == str(END)

    # A second version, served, then rolled back from.
    pins = read_pins(lake)
    cfg = ModelConfig.for_data(len(pins), pins.max_interest_id, **TINY_MODEL)
    save_model(registry, TwoTower.build(cfg, seed=2).eval(), WINDOW, {})
    run_ok(*encode_cmd(lake, registry, "--version", "v2"), *IN_MEMORY)
    assert one_more(ledger_file, 5).model_version == "v2"
    run_ok(*index, "--version", "v2", "--threads", "1", "--ef-search", "50", *IN_MEMORY)
    assert one_more(ledger_file, 6).model_version == "v2"
    run_ok("publish", "--version", "v2", *publish)
    assert one_more(ledger_file, 7).extra["previous_version"] == "v1"
    run_ok("rollback", *publish)
    rec = one_more(ledger_file, 8)
    assert (rec.job, rec.model_version, rec.output) == ("rollback", "v1", str(serving))
    assert rec.extra["previous_version"] == "v2"  # the version rolled back from

    jobs = [r.job for r in ledger.read(ledger_file)]
    assert set(jobs) == {"load-profiles", "batch encode", "batch corpus", "batch index"} | {
        "publish",
        "rollback",
    }
    assert ledger.last(ledger.read(ledger_file), view="user_history_state").model_version == "v2"


def test_a_refused_publish_records_failed_and_no_success(
    lake: Path, registry: Path, ledger_file: Path, tmp_path: Path
) -> None:
    ran = towerline_here(
        "publish", "--version", "v1", "--registry", registry, "--indexes", tmp_path / "none",
        "--lake", lake, "--no-online-check",
    )  # fmt: skip
    error = assert_user_error(ran, 1, "v1 has no index")
    [rec] = ledger.read(ledger_file)
    assert (rec.job, rec.outcome, rec.model_version) == ("publish", FAILED, "v1")
    assert rec.error and error == f"error: {rec.error}"
    assert rec.output is None and rec.rows is None


def test_a_failed_encode_records_failed_with_its_exit_code_kept(
    lake: Path, registry: Path, ledger_file: Path
) -> None:
    ran = towerline_here(*encode_cmd(lake, registry, "--version", "v9"), *IN_MEMORY)
    assert_user_error(ran, 2, "no version 'v9'")
    [rec] = ledger.read(ledger_file)
    assert (rec.job, rec.outcome, rec.model_version, rec.partition) == (
        "batch encode",
        FAILED,
        "v9",
        END,
    )
    assert "no version 'v9'" in rec.error


def test_an_encode_killed_mid_run_leaves_no_success(
    lake: Path, registry: Path, ledger_file: Path
) -> None:
    earlier = RunRecord(
        job="batch encode",
        outcome=SUCCESS,
        started_at=ledger.utc_now(),
        finished_at=ledger.utc_now(),
        partition=END,
        model_version="v1",
    )
    ledger.append(ledger_file, earlier)
    child = start_encode(lake, registry)
    try:
        wait_for_workers(child)
    finally:
        kill_tree(child)  # as the OOM killer or a power cut would
    assert child.returncode == -signal.SIGKILL
    records = ledger.read(ledger_file)
    assert records == [earlier], "a killed run must leave no record, least of all a success"
    assert not (lake / "user_history_state" / f"dt={END}" / "v1").exists()
    later = RunRecord(
        job="batch corpus",
        outcome=SUCCESS,
        started_at=ledger.utc_now(),
        finished_at=ledger.utc_now(),
    )
    ledger.append(ledger_file, later)
    assert ledger.read(ledger_file) == [earlier, later]


def test_ctrl_c_during_an_encode_records_interrupted(
    lake: Path, registry: Path, ledger_file: Path
) -> None:
    child = start_encode(lake, registry)
    try:
        wait_for_workers(child)
        os.killpg(child.pid, signal.SIGINT)  # as a terminal's Ctrl-C
        _, stderr = child.communicate(timeout=30)
    finally:
        kill_tree(child)
    assert child.returncode == 130, stderr[-2000:]
    [rec] = ledger.read(ledger_file)
    assert (rec.job, rec.outcome, rec.partition) == ("batch encode", INTERRUPTED, END)
    assert rec.error.startswith("interrupted: the encode of dt=") and rec.pid == child.pid


def test_the_ledger_path_comes_from_the_environment_or_the_flag(
    lake: Path, registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = [
        "publish", "--version", "v1", "--registry", registry, "--indexes", tmp_path / "none",
        "--lake", lake, "--no-online-check",
    ]  # fmt: skip
    from_env, from_flag = tmp_path / "env" / "ledger.jsonl", tmp_path / "flag.jsonl"
    repos_own = ROOT / ".towerline" / "ledger.jsonl"
    before = repos_own.read_bytes() if repos_own.exists() else None
    ran = towerline(*refused, env={"TOWERLINE_LEDGER": str(from_env)})  # a child, from ROOT
    assert_user_error(ran, 1, "has no index")
    assert [(r.job, r.outcome) for r in ledger.read(from_env)] == [("publish", FAILED)]
    monkeypatch.setenv("TOWERLINE_LEDGER", str(from_env))
    ran = towerline_here(*refused, "--ledger", from_flag)  # the flag wins over the env
    assert_user_error(ran, 1, "has no index")
    assert len(ledger.read(from_env)) == 1 and len(ledger.read(from_flag)) == 1
    after = repos_own.read_bytes() if repos_own.exists() else None
    assert after == before, "a test wrote to the repository's own ledger"


def start_encode(lake: Path, registry: Path) -> subprocess.Popen:
    """``towerline batch encode`` as a child in a session of its own, on the default runner
    (SDK worker processes), recording in this test's ledger."""
    return subprocess.Popen(
        [sys.executable, "-m", "towerline.cli", *encode_cmd(lake, registry), "--shards", "4"],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_workers(child: subprocess.Popen) -> None:
    """Until the job's workers run: it is mid-run, far from publishing."""
    deadline = time.monotonic() + 120
    while not _workers(child.pid) and child.poll() is None:
        assert time.monotonic() < deadline, "the encode never started its workers"
        time.sleep(0.05)
    assert child.poll() is None, "the job ended before it could be stopped"


def kill_tree(child: subprocess.Popen) -> None:
    """SIGKILL the child, if it still runs, and everything below it (its workers sit in
    process groups of their own); reap it."""
    if child.poll() is None:
        for pid in [child.pid, *descendants(child.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    child.communicate(timeout=30)
