"""`towerline daily` on a small real world: real Beam jobs, registry, index store, SQLite
Feast store and ledger. A day runs every step; a rerun builds nothing; a day that died
after its encode step resumes there and ends where an uninterrupted run ends."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import feast
import pytest

from batch import daily
from batch.corpus import run_corpus
from batch.corpus_steps import CorpusConfig
from batch.daily import STEPS, DailyConfig, DailyError, run_daily
from batch.encode_job import EncodeConfig, run_encode
from batch.index import run_index
from batch.publish import publish
from model.artifacts import TwoTower, save_model
from model.config import ModelConfig
from model.lake_io import read_pins
from tests.batch.conftest import TINY_MODEL
from tests.cli.cli_kit import (
    ROOT,
    assert_user_error,
    child_env,
    snapshot,
    towerline_here,
)
from towerline.core import ledger
from towerline.core.ann import INDEX_FILE, SERVING, read_metadata, read_pointer
from towerline.core.featurestore import apply_repo, open_store
from towerline.world import WorldConfig, generate

END = dt.date(2025, 6, 30)
DIRECT = ("--runner=DirectRunner",)
TOP_M = 10_000


@dataclasses.dataclass(frozen=True)
class World:
    root: Path
    store: feast.FeatureStore
    project: str

    lake = property(lambda self: self.root / "lake")
    registry = property(lambda self: self.root / "registry")
    indexes = property(lambda self: self.root / "indexes")
    ledger = property(lambda self: self.root / "ledger.jsonl")
    feast_dir = property(lambda self: self.root / "feast")
    serving = property(lambda self: self.root / "indexes" / "two_tower" / SERVING)

    def config(self) -> DailyConfig:
        # threads=1: one build thread makes the HNSW graph a function of its input, so two
        # worlds' builds can be compared byte for byte.
        return DailyConfig(
            day=END,
            lake=self.lake,
            registry=self.registry,
            indexes=self.indexes,
            ledger=self.ledger,
            half_life_days=7.0,
            top_m=TOP_M,
            threads=1,
            pipeline_args=DIRECT,
            progress=False,
        )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: v1 of a tiny model live since the day before END (states, corpus, index
    and serving.json of END-1), no Feast store (each copy gets its own)."""
    root = tmp_path_factory.mktemp("daily-base")
    lake, registry, indexes = root / "lake", root / "registry", root / "indexes"
    generate(
        WorldConfig(users=100, pins=250, days=4, seed=7, end_date=END, offsite_per_user=12.0),
        lake,
        progress=False,
    )
    pins = read_pins(lake)
    cfg = ModelConfig.for_data(len(pins), pins.max_interest_id, **TINY_MODEL)
    save_model(registry, TwoTower.build(cfg, seed=1).eval(), {"seed": 1}, {})
    before = END - dt.timedelta(days=1)
    encode = EncodeConfig(lake=lake, day=before, registry=registry, version="v1", progress=False)
    run_encode(encode, pipeline_args=list(DIRECT), store=None)
    snapshot_dir = run_corpus(lake, CorpusConfig(before, 7.0, top_m=TOP_M))["path"]
    run_index(Path(snapshot_dir), registry, "v1", indexes, threads=1, pipeline_args=list(DIRECT))
    publish("v1", registry, indexes, lake, store=None)
    return root


def copy_world(base: Path, dest: Path) -> World:
    """A private copy of ``base`` with its own SQLite Feast store and ledger."""
    for part in ("lake", "registry", "indexes"):
        shutil.copytree(base / part, dest / part)
    project = f"dly_{uuid.uuid4().hex[:8]}"
    store = open_store(online="sqlite", project=project, data_dir=dest / "feast")
    apply_repo(store, lake=dest / "lake")
    return World(dest, store, project)


@pytest.fixture(scope="module")
def uninterrupted(base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[World, dict]:
    """A copy of ``base`` after one uninterrupted daily run of END."""
    world = copy_world(base, tmp_path_factory.mktemp("daily-whole"))
    return world, run_daily(world.config(), world.store)


def successes(world: World) -> list[str]:
    return [r.job for r in ledger.read(world.ledger) if r.outcome == ledger.SUCCESS]


def files(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def final_state(world: World) -> dict:
    """What a day leaves that must not depend on how it got there (no timestamps)."""
    serving = read_pointer(world.serving)
    meta = read_metadata(world.indexes / "two_tower" / serving["dir"])
    return {
        "version": serving["model_version"],
        "corpus_snapshot": serving["corpus_snapshot"],
        "index_sha256": serving["index_sha256"],
        "history_states": serving["history_states"],
        "previous": (serving["previous"] or {}).get("dir"),
        "states": files(world.lake / "user_history_state" / f"dt={END}" / "v1"),
        "index_metadata": {k: v for k, v in meta.items() if k != "built_at"},
    }


def test_a_day_runs_every_step_and_publishes_the_live_versions_new_build(
    base: Path, uninterrupted: tuple[World, dict]
) -> None:
    world, summary = uninterrupted
    assert summary["ran"] == list(STEPS) and summary["skipped"] == []
    assert summary["model_version"] == "v1"
    serving = read_pointer(world.serving)
    old = read_pointer(base / "indexes" / "two_tower" / SERVING)
    assert serving["dir"] == summary["build"] != old["dir"]
    assert serving["history_states"]["partition"] == END.isoformat()
    # A new build of the live version keeps previous: the way back is another version's build.
    assert serving["previous"] is None and old["previous"] is None
    assert serving["corpus_snapshot"] == summary["snapshot_id"]
    assert summary["snapshot_id"].startswith(f"corpus-{END:%Y%m%d}-")
    assert (Path(summary["states"]) / "_manifest.json").is_file()
    assert successes(world) == ["batch corpus", "batch encode", "batch index", "publish", "daily"]
    record = ledger.last(ledger.read(world.ledger), job="daily")
    assert record.partition == END and record.model_version == "v1"
    assert record.extra["steps"] == dict.fromkeys(STEPS, "ran")


def test_a_rerun_of_a_finished_day_skips_every_step_and_builds_nothing(
    uninterrupted: tuple[World, dict],
) -> None:
    world, _ = uninterrupted
    before = {part: snapshot(world.root / part) for part in ("lake", "registry", "indexes")}
    serving_bytes, records = world.serving.read_bytes(), ledger.read(world.ledger)
    ran = towerline_here(
        "daily", "--date", END.isoformat(), "--lake", world.lake, "--registry", world.registry,
        "--indexes", world.indexes, "--ledger", world.ledger, "--half-life", "7d",
        "--top-m", str(TOP_M), "--threads", "1", "--online", "sqlite",
        "--data-dir", world.feast_dir, "--project", world.project, "--", *DIRECT,
    )  # fmt: skip
    assert ran.code == 0, str(ran)
    lines = ran.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["skipped"] == list(STEPS) and summary["ran"] == []
    assert [line.split()[:2] for line in lines[1:5]] == [[s, "skipped"] for s in STEPS]
    # Nothing new anywhere: no snapshot, partition or build, no pointer moved.
    assert {part: snapshot(world.root / part) for part in before} == before
    assert world.serving.read_bytes() == serving_bytes
    added = ledger.read(world.ledger)[len(records) :]
    assert [r.job for r in added] == ["daily"]
    assert added[0].extra["steps"] == dict.fromkeys(STEPS, "skipped")


def test_a_day_killed_after_encode_resumes_there_and_ends_as_an_uninterrupted_run(
    base: Path,
    uninterrupted: tuple[World, dict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = copy_world(base, tmp_path)
    serving_before = world.serving.read_bytes()
    real_index, calls = run_index, []

    def dies_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("killed after the encode step")
        return real_index(*args, **kwargs)

    monkeypatch.setattr(daily, "index_job", lambda shards: dies_once)
    with pytest.raises(RuntimeError, match="killed"):
        run_daily(world.config(), world.store)
    assert world.serving.read_bytes() == serving_before
    assert successes(world) == ["batch corpus", "batch encode"]
    failed = [r.job for r in ledger.read(world.ledger) if r.outcome == ledger.FAILED]
    assert failed == ["batch index", "daily"]

    summary = run_daily(world.config(), world.store)
    assert summary["skipped"] == ["corpus", "encode"] and summary["ran"] == ["index", "publish"]
    assert successes(world).count("batch encode") == 1
    assert final_state(world) == final_state(uninterrupted[0])


def test_a_day_sigkilled_after_its_encode_resumes_there_and_ends_as_an_uninterrupted_run(
    base: Path, uninterrupted: tuple[World, dict], tmp_path: Path
) -> None:
    """The same through the real CLI and a real SIGKILL, as the OOM killer would do it:
    the moment the ledger shows the encode's success, the whole process group dies."""
    world = copy_world(base, tmp_path)
    serving_before = world.serving.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-m", "towerline.cli", "daily", "--date", END.isoformat(),
         "--lake", str(world.lake), "--registry", str(world.registry),
         "--indexes", str(world.indexes), "--ledger", str(world.ledger), "--half-life", "7d",
         "--top-m", str(TOP_M), "--threads", "1", "--retrain-off", "--online", "sqlite",
         "--data-dir", str(world.feast_dir), "--project", world.project, "--", *DIRECT],
        cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while "batch encode" not in successes(world):
            assert child.poll() is None, f"the day ended first: {child.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the encode never finished"
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert world.serving.read_bytes() == serving_before, "killed before its publish"
    assert successes(world) == ["batch corpus", "batch encode"]

    summary = run_daily(world.config(), world.store)
    assert summary["skipped"] == ["corpus", "encode"] and summary["ran"] == ["index", "publish"]
    assert successes(world).count("batch encode") == 1
    assert final_state(world) == final_state(uninterrupted[0])


def test_states_killed_during_their_online_write_are_encoded_again(
    uninterrupted: tuple[World, dict], tmp_path: Path
) -> None:
    world, _ = uninterrupted
    copy = World(Path(shutil.copytree(world.root, tmp_path / "w")), world.store, world.project)
    cfg = dataclasses.replace(copy.config(), lake=copy.lake, ledger=copy.ledger)
    assert daily.find_states(cfg, "v1") is not None
    # A later run republished the files and died before its success (no line: SIGKILL).
    manifest = copy.lake / "user_history_state" / f"dt={END}" / "v1" / "_manifest.json"
    manifest.write_bytes(manifest.read_bytes())
    last = ledger.last(ledger.read(copy.ledger), job="batch encode")
    stamp = (last.finished_at + dt.timedelta(seconds=5)).timestamp()
    os.utime(manifest, (stamp, stamp))
    assert daily.find_states(cfg, "v1") is None


def test_a_damaged_build_is_never_reused(uninterrupted: tuple[World, dict], tmp_path: Path) -> None:
    world, summary = uninterrupted
    indexes = Path(shutil.copytree(world.indexes, tmp_path / "indexes"))
    cfg = dataclasses.replace(world.config(), indexes=indexes)
    now = dt.datetime.now(dt.UTC)
    assert daily.find_index(cfg, "v1", summary["snapshot_id"], now)["path"] == str(
        indexes / "two_tower" / summary["build"]
    )
    other = dataclasses.replace(cfg, hnsw=dataclasses.replace(cfg.hnsw, M=8))
    assert daily.find_index(other, "v1", summary["snapshot_id"], now) is None
    (indexes / "two_tower" / summary["build"] / INDEX_FILE).write_bytes(b"not an index")
    assert daily.find_index(cfg, "v1", summary["snapshot_id"], now) is None


def test_nothing_published_yet_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DailyError, match="nothing is published yet"):
        daily.live_version(None, tmp_path / SERVING)
    ran = towerline_here(  # in process: the CLI's error path is the one every command shares
        "daily", "--date", END.isoformat(), "--lake", tmp_path / "lake",
        "--registry", tmp_path / "registry", "--indexes", tmp_path / "indexes",
        "--ledger", tmp_path / "ledger.jsonl",
    )  # fmt: skip
    assert_user_error(ran, 1, "nothing is published yet", "train/encode/index/publish", "demo")
    assert not (tmp_path / "ledger.jsonl").exists()


def test_run_index_with_reuse_returns_the_intact_build_and_builds_nothing(
    uninterrupted: tuple[World, dict], tmp_path: Path
) -> None:
    world, summary = uninterrupted
    indexes = Path(shutil.copytree(world.indexes, tmp_path / "indexes"))
    before = snapshot(indexes)
    snapshot_dir = world.lake / "corpus" / summary["snapshot_id"]
    again = run_index(snapshot_dir, world.registry, "v1", indexes, threads=1, reuse=True)
    assert again["reused"] is True and Path(again["path"]).name == summary["build"]
    assert snapshot(indexes) == before


def test_a_sharded_day_publishes_a_whole_set_that_a_rerun_reuses_and_damage_rebuilds(
    uninterrupted: tuple[World, dict], tmp_path: Path
) -> None:
    done, summary = uninterrupted
    for part in ("lake", "registry", "indexes", "feast"):  # the states online too
        shutil.copytree(done.root / part, tmp_path / part)
    shutil.copy(done.ledger, tmp_path / done.ledger.name)  # the day's encode succeeded
    store = open_store(online="sqlite", project=done.project, data_dir=tmp_path / "feast")
    world = World(tmp_path, store, done.project)
    cfg = dataclasses.replace(world.config(), shards=2)
    sharded = run_daily(cfg, world.store)
    assert sharded["ran"] == ["index", "publish"] and sharded["skipped"] == ["corpus", "encode"]
    serving = read_pointer(world.serving)
    shard_dirs = [s["dir"] for s in serving["shards"]]
    assert serving["dir"] == sharded["build"] == shard_dirs[0] != summary["build"]
    places = [read_metadata(world.indexes / "two_tower" / d)["shard"] for d in shard_dirs]
    assert [(p["index"], p["count"]) for p in places] == [(0, 2), (1, 2)]
    assert places[0]["set"] == serving["set"] and places[0]["set_items"] > 0
    # A rerun finds the whole set and moves nothing; a one-index day does not take a shard.
    before = snapshot(world.indexes)
    again = run_daily(cfg, world.store)
    assert again["skipped"] == list(STEPS) and snapshot(world.indexes) == before
    now = dt.datetime.now(dt.UTC)
    plain = daily.find_index(world.config(), "v1", summary["snapshot_id"], now)
    assert plain is not None and Path(plain["path"]).name == summary["build"]
    # One damaged shard makes the set unusable as a whole: the next day rebuilds it.
    (world.indexes / "two_tower" / shard_dirs[1] / INDEX_FILE).write_bytes(b"not an index")
    assert daily.find_index(cfg, "v1", summary["snapshot_id"], now) is None
