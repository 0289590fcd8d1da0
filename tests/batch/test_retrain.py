"""`towerline retrain` and the daily cadence on a small real world: a trained v1 live, real
Beam jobs, registry, index store, SQLite Feast store, ledger and a real `towerline serve`.

A candidate trained on shuffled labels fails the gate and v1 stays live and intact; a good
one passes, is rolled out while `towerline serve` answers continuously, and `towerline
rollback` returns to v1 the same way; the daily cadence retrains when due and not otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from batch.corpus import run_corpus
from batch.corpus_steps import CorpusConfig
from batch.daily import retrain_now, run_daily
from batch.encode_job import EncodeConfig, run_encode
from batch.gate import GateConfig, decide, gate_table
from batch.index import run_index
from batch.publish import _previous_for, publish
from batch.retrain import RetrainOptions, due, read_report, train_window
from model import registry as reg
from model.config import TrainConfig
from model.jobs import run_train
from model.lake_io import Window
from model.protocol import held_out_targets
from serving.server import free_port
from tests.batch.conftest import TINY_MODEL
from tests.batch.test_daily import DIRECT, END, TOP_M, World, copy_world
from tests.cli.cli_kit import ROOT, assert_user_error, child_env, snapshot, towerline_here
from towerline.core import ledger
from towerline.core.ann import list_indexes, read_pointer
from towerline.world import WorldConfig, generate

DAY = dt.timedelta(days=1)
# 600 users make the held-out comparison steady enough: the shuffled candidate loses about
# 0.05 of recall@50, a good one lands within noise of v1. 0.02 separates them.
MARGIN = 0.02
GOOD = RetrainOptions(gate=GateConfig(margin=MARGIN), keep_versions=2)
SHUFFLED = dataclasses.replace(GOOD, shuffle_labels_seed=3)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: v1 trained on END-4..END-2, its states, corpus and index of END-1, live."""
    root = tmp_path_factory.mktemp("retrain-base")
    lake, registry, indexes = root / "lake", root / "registry", root / "indexes"
    world = WorldConfig(users=600, pins=250, days=5, seed=7, end_date=END, offsite_per_user=20.0)
    generate(world, lake, progress=False)
    tcfg = TrainConfig(epochs=10, batch_targets=128, warmup_steps=10, progress=False)
    run_train(lake, registry, until=END - 2 * DAY, tcfg=tcfg, model_overrides=TINY_MODEL)
    before = END - DAY
    encode = EncodeConfig(lake=lake, day=before, registry=registry, version="v1", progress=False)
    run_encode(encode, pipeline_args=list(DIRECT), store=None)
    snapshot_dir = run_corpus(lake, CorpusConfig(before, 7.0, top_m=TOP_M))["path"]
    run_index(Path(snapshot_dir), registry, "v1", indexes, threads=1, pipeline_args=list(DIRECT))
    publish("v1", registry, indexes, lake, store=None)
    return root


def config(world: World, options: RetrainOptions = GOOD, every: int | None = None):
    return dataclasses.replace(world.config(), retrain=options, retrain_every_days=every)


def live_day(world: World) -> dict:
    """Day END's chain for v1 with retraining off: v1's states are online for rollback."""
    return run_daily(config(world), world.store)


def test_a_candidate_on_shuffled_labels_fails_the_gate_and_v1_stays_live(
    base: Path, tmp_path: Path
) -> None:
    world = copy_world(base, tmp_path)
    serving_bytes = world.serving.read_bytes()
    v1_files = snapshot(world.registry / "two_tower" / "v1")
    indexes = snapshot(world.indexes)
    report = retrain_now(config(world, SHUFFLED), world.store)

    assert report["decision"] == "rejected" and report["candidate"]["version"] == "v2"
    assert report["live"]["version"] == "v1" and report["served"] == "v1"
    assert not report["gate"]["passed"] and "with_context.recall@50" in report["gate"]["reason"]
    assert report["candidate"]["window"] == {"start": "2025-06-27", "end": "2025-06-29"}
    # v1 live and intact: the pointer, its model files and the index store are untouched.
    assert world.serving.read_bytes() == serving_bytes
    assert snapshot(world.registry / "two_tower" / "v1") == v1_files
    assert {k: v for k, v in snapshot(world.indexes).items() if "lock" not in k} == indexes
    rejected = json.loads((world.registry / "two_tower" / "v2" / reg.REJECTED).read_text())
    assert "recall@50" in rejected["reason"]
    assert reg.resolve_version(world.registry, "two_tower", "latest") == "v1"
    # The report names both versions, with their metrics side by side.
    saved = read_report(world.registry, "two_tower", "v2")
    assert saved["gate"] == report["gate"]
    table = gate_table(saved)
    assert "live v1" in table and "new v2" in table and "REJECTED" in table
    record = ledger.last(ledger.read(world.ledger), job="retrain")
    assert record.extra["decision"] == "rejected" and record.model_version == "v2"
    assert record.extra["live_version"] == "v1" and record.partition == END
    # The next candidate pushes the older rejected one out, never v1 (keep 2: v1, v3).
    again = retrain_now(config(world, SHUFFLED), world.store)
    assert again["candidate"]["version"] == "v3" and again["retired"]["versions"] == ["v2"]
    assert reg.list_versions(world.registry, "two_tower") == ["v1", "v3"]
    assert world.serving.read_bytes() == serving_bytes


def test_a_good_candidate_is_rolled_out_under_load_and_rollback_returns_to_v1(
    base: Path, tmp_path: Path
) -> None:
    world = copy_world(base, tmp_path)
    first = live_day(world)
    v1_build = first["build"]
    args = ["serve", "--indexes", world.indexes, "--registry", world.registry]
    args += ["--online", "sqlite", "--data-dir", world.feast_dir, "--project", world.project]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "towerline.cli", *map(str, args), "--port", str(port)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    answers: list[tuple[str, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(user: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    got = session.post(f"{url}/v1/retrieve", json={"user_id": user, "k": 10}, timeout=10)  # fmt: skip
                except requests.RequestException as exc:
                    failures.append(repr(exc))
                    continue
                if got.status_code != 200 or len(got.json()["candidates"]) != 10:
                    failures.append(got.text)
                else:
                    answers.append((got.json()["model_version"], got.json()["index_built_at"]))

    def serving_becomes(version: str) -> None:
        deadline = time.monotonic() + 30
        while not (answers and answers[-1][0] == version):
            assert time.monotonic() < deadline, f"serving never switched to {version}"
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(u,)) for u in (1, 2, 5)]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "towerline serve never became ready"
            time.sleep(0.2)
        for thread in threads:
            thread.start()
        serving_becomes("v1")
        ran = towerline_here(
            "retrain", "--until", END.isoformat(), "--lake", world.lake,
            "--registry", world.registry, "--indexes", world.indexes, "--ledger", world.ledger,
            "--gate-margin", str(MARGIN), "--keep-versions", "2", "--top-m", str(TOP_M),
            "--threads", "1", "--no-progress", "--online", "sqlite",
            "--data-dir", world.feast_dir, "--project", world.project, "--", *DIRECT,
        )  # fmt: skip
        assert ran.code == 0, str(ran)
        report = json.loads(ran.stdout.strip().splitlines()[-1])
        assert report["decision"] == "published" and report["served"] == "v2", ran.stdout
        assert "live v1" in ran.stdout and "gate PASSED" in ran.stdout
        serving_becomes("v2")
        pointer = read_pointer(world.serving)
        assert pointer["model_version"] == "v2" and pointer["previous"]["dir"] == v1_build
        # Both versions' states of END coexist, keyed by version.
        assert (world.lake / "user_history_state" / f"dt={END}" / "v1").is_dir()
        assert (world.lake / "user_history_state" / f"dt={END}" / "v2").is_dir()
        back = towerline_here(
            "rollback", "--registry", world.registry, "--indexes", world.indexes,
            "--lake", world.lake, "--online", "sqlite", "--data-dir", world.feast_dir,
            "--project", world.project, "--ledger", world.ledger,
        )  # fmt: skip
        assert back.code == 0, str(back)
        serving_becomes("v1")
        assert read_pointer(world.serving)["dir"] == v1_build
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join()
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert not failures, failures[:3]
    built = {p.name: m for p, m in list_indexes(world.indexes, "two_tower")}
    served_builds = {
        (built[v1_build]["model_version"], built[v1_build]["built_at"]),
        (report["rollout"]["model_version"], built[report["rollout"]["build"]]["built_at"]),
    }
    assert {v for v, _ in answers} == {"v1", "v2"} and len(answers) > 30
    assert set(answers) <= served_builds  # every answer from one version's own build
    assert "Traceback" not in output, output


def test_the_daily_cadence_retrains_when_due_and_not_otherwise(base: Path, tmp_path: Path) -> None:
    world = copy_world(base, tmp_path)
    weekly = run_daily(config(world, every=7), world.store)  # v1's data ends END-2: 2 days
    assert (
        weekly["retrain"]["due"] is False and "2 days since 2025-06-28" in weekly["retrain"]["why"]
    )
    assert weekly["model_version"] == "v1"
    assert not [r for r in ledger.read(world.ledger) if r.job == "retrain"]

    daily = run_daily(config(world, every=2), world.store)
    assert daily["retrain"]["due"] is True and daily["retrain"]["decision"] == "published"
    assert daily["model_version"] == "v2" and daily["retrain"]["served_before"] == "v1"
    # The roll-out built v2's day; the chain that follows finds it all done.
    assert daily["skipped"] == ["corpus", "encode", "index", "publish"]
    assert read_pointer(world.serving)["model_version"] == "v2"
    jobs = [r.job for r in ledger.read(world.ledger)]
    assert jobs.count("retrain") == 1 and jobs[-1] == "daily"

    again = run_daily(config(world, every=2), world.store)  # the retrain of END just ran
    assert again["retrain"]["due"] is False and again["ran"] == []
    assert [r.job for r in ledger.read(world.ledger)].count("retrain") == 1


def test_a_failed_retrain_does_not_stop_the_days_chain(base: Path, tmp_path: Path) -> None:
    world = copy_world(base, tmp_path)
    ran = towerline_here(
        "daily", "--date", END.isoformat(), "--lake", world.lake, "--registry", world.registry,
        "--indexes", world.indexes, "--ledger", world.ledger, "--top-m", str(TOP_M),
        "--threads", "1", "--no-progress", "--online", "sqlite", "--data-dir", world.feast_dir,
        "--project", world.project,
        "--retrain-every", "1d", "--holdout-days", "5",  # v1 trained inside it: refused
        "--", *DIRECT,
    )  # fmt: skip
    assert_user_error(ran, 1, "the retrain failed", "held-out window", "chain ran for v1")
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert summary["model_version"] == "v1" and "error" in summary["retrain"]
    assert summary["ran"] == ["corpus", "encode", "index", "publish"]
    assert ran.stdout.startswith("retrain failed: the live version v1 trained on events")
    assert ledger.last(ledger.read(world.ledger), job="daily").extra["retrain"] == "failed"


def test_retrain_usage_errors_are_one_line(tmp_path: Path) -> None:
    where = ["--lake", tmp_path / "lake", "--registry", tmp_path / "r", "--indexes", tmp_path / "i"]
    where += ["--ledger", tmp_path / "ledger.jsonl"]
    nothing = towerline_here("retrain", "--until", END.isoformat(), *where)
    assert_user_error(nothing, 1, "nothing is published yet")
    metric = towerline_here("retrain", "--gate-metric", "recall", *where)
    assert_user_error(metric, 2, "--gate-metric")
    every = towerline_here("daily", "--retrain-every", "36h", *where)
    assert_user_error(every, 2, "--retrain-every", "whole days")
    assert not (tmp_path / "ledger.jsonl").exists()


# --- pure parts ---------------------------------------------------------------------------


def test_the_gate_passes_within_the_margin_and_names_every_metric_that_fails() -> None:
    def metrics(recall: float, ndcg: float, share: float) -> dict:
        return {"with_context": {"recall@50": recall, "ndcg@10": ndcg}, "state_share": share}

    live = metrics(0.30, 0.10, 1.0)
    cfg = GateConfig()
    assert decide(metrics(0.291, 0.095, 1.0), live, cfg)["passed"]
    worse = decide(metrics(0.28, 0.10, 0.98), live, cfg)
    assert not worse["passed"]
    assert [c["metric"] for c in worse["checks"] if not c["passed"]] == ["with_context.recall@50", "state_share"]  # fmt: skip
    assert "recall@50" in worse["reason"] and "state_share" in worse["reason"]
    assert decide(metrics(0.28, 0.10, 1.0), live, GateConfig(margin=0.05))["passed"]
    with pytest.raises(ValueError):
        GateConfig(margin=2.0)


def test_cadence_and_windows() -> None:
    assert due(END, END - 7 * DAY, 7) == (True, "7 days since 2025-06-23 (every 7)")
    assert due(END, END - 6 * DAY, 7)[0] is False
    assert due(END, END - 30 * DAY, None) == (False, "retraining is off")
    held = Window(END, END)
    assert train_window(held, 3, END - 10 * DAY) == Window(END - 3 * DAY, END - DAY)
    assert train_window(held, None, END - 2 * DAY) == Window(END - 2 * DAY, END - DAY)


def test_held_out_targets_are_each_users_last_event_inside_the_window() -> None:
    users = np.array([1, 1, 1, 2, 2, 3, 3, 3])
    ts = np.array([1, 2, 15, 3, 4, 5, 16, 17])
    # user 1: last at 15 (inside); user 2: last at 4 (before); user 3: last at 17 (inside).
    assert held_out_targets(users, ts, 10, 20).tolist() == [2, 7]
    assert held_out_targets(users, ts, 10, 17).tolist() == [2]


def test_publishing_a_new_build_of_the_live_version_keeps_previous() -> None:
    v1_old = {"model_version": "v1", "dir": "v1-a", "published_at": "t0", "previous": None}
    v2 = {"model_version": "v2", "dir": "v2-a", "published_at": "t1"}
    after_retrain = _previous_for(v1_old, "v2")
    assert after_retrain == {"model_version": "v1", "dir": "v1-a", "published_at": "t0"}
    live = {**v2, "previous": after_retrain}
    assert _previous_for(live, "v2") == after_retrain  # tomorrow's build of v2
    assert _previous_for(live, "v1") == v2  # a rollback: v2 becomes the way back


def test_rejected_versions_are_never_latest_and_are_pruned_first(tmp_path: Path) -> None:
    from model.artifacts import TwoTower, save_model
    from model.config import ModelConfig

    cfg = ModelConfig(pin_buckets=32, interest_vocab=8, dim=8, d_model=8, heads=2, layers=1, ff=16, max_len=4, realtime_len=2, context_dim=4, head_hidden=16)  # fmt: skip
    for seed in range(3):
        save_model(tmp_path, TwoTower.build(cfg, seed=seed), {}, {}, keep=10)
    reg.pin_versions(tmp_path, "two_tower", {"serving": "v1"})
    reg.mark_rejected(tmp_path, "two_tower", "v3", {"reason": "worse"})
    reg.mark_rejected(tmp_path, "two_tower", "v2", {"reason": "worse"})
    save_model(tmp_path / "only", TwoTower.build(cfg), {}, {})
    reg.mark_rejected(tmp_path / "only", "two_tower", "v1", {"reason": "worse"})
    with pytest.raises(reg.RegistryError, match=r"rejected by the retrain gate \(v1\)"):
        reg.resolve_version(tmp_path / "only", "two_tower", "latest")
    assert reg.resolve_version(tmp_path, "two_tower", "latest") == "v1"
    assert reg.resolve_version(tmp_path, "two_tower", "v3") == "v3"  # named: still usable
    save_model(tmp_path, TwoTower.build(cfg, seed=9), {}, {}, keep=10)  # v4
    assert reg.prune(tmp_path, "two_tower", 3) == ["v2"]  # rejected first, not the oldest
    assert reg.prune(tmp_path, "two_tower", 2) == ["v3"]
    assert reg.list_versions(tmp_path, "two_tower") == ["v1", "v4"]
    reg.verify_version(tmp_path, "two_tower", "v1")
