"""How the batch and model commands fail (GitHub issue #8): one line, the documented exit
code, no traceback, and the last good output left as it was.

A tiny world (50 users, 64 pins, 3 days) and a one-version registry of an untrained tiny
model are built once; each test works on private copies of what it changes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.encode_job import EncodeConfig, run_encode
from model.artifacts import TwoTower, save_model
from model.config import ModelConfig
from model.lake_io import read_pins
from model.registry import list_versions
from tests.batch.conftest import TINY_MODEL
from tests.batch.test_publish import build_index, write_states
from tests.cli.cli_kit import ROOT, Ran, assert_user_error, snapshot, towerline_here
from towerline.world import WorldConfig, generate

END = dt.date(2025, 6, 30)
WINDOW = {"start": "2025-06-28", "end": "2025-06-30", "holdout": "leave-one-out"}
IN_MEMORY = ["--", "--runner=DirectRunner"]  # one in-process worker: fast
STATES = "user_history_state"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: the tiny world's lake."""
    lake = tmp_path_factory.mktemp("errors-batch") / "lake"
    cfg = WorldConfig(users=50, pins=64, days=3, seed=5, end_date=END, offsite_per_user=20.0)
    generate(cfg, lake, progress=False)
    return lake


@pytest.fixture(scope="module")
def world_registry(tmp_path_factory: pytest.TempPathFactory, world: Path) -> Path:
    """Read-only: two_tower v1, trained on nothing, its window the world's 3 days."""
    root = tmp_path_factory.mktemp("errors-registry")
    pins = read_pins(world)
    cfg = ModelConfig.for_data(len(pins), pins.max_interest_id, **TINY_MODEL)
    save_model(root, TwoTower.build(cfg, seed=1).eval(), WINDOW, {})
    return root


@pytest.fixture
def lake(tmp_path: Path, world: Path) -> Path:
    return Path(shutil.copytree(world, tmp_path / "lake"))


@pytest.fixture
def registry(tmp_path: Path, world_registry: Path) -> Path:
    return Path(shutil.copytree(world_registry, tmp_path / "registry"))


def encode_here(lake: Path, registry: Path, model_name: str = "two_tower") -> None:
    """A good run of the day's encode (in this process): the output a failure must keep."""
    cfg = EncodeConfig(lake, END, registry, "v1", model_name, shards=2, progress=False)
    run_encode(cfg, ["--runner=DirectRunner"], store=None)


def tamper(registry: Path, part: str = "encoder.pt") -> None:
    path = registry / "two_tower" / "v1" / part
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def encode_cmd(lake: Path, registry: Path, *more: str) -> list[str]:
    args = ["batch", "encode", "--lake", str(lake), "--dt", str(END), "--registry", str(registry)]
    return [*args, "--online", "none", "--no-progress", *more]


# --- 1. pruning never deletes what serving.json names -------------------------------


def test_train_keep_1_never_prunes_the_published_version(lake: Path, registry: Path) -> None:
    indexes = lake.parent / "indexes"
    build_index(indexes, registry, "v1")
    write_states(lake, "v1")
    published = towerline_here(
        "publish", "--version", "v1", "--registry", registry, "--indexes", indexes,
        "--lake", lake, "--no-online-check",
    )  # fmt: skip
    assert published.code == 0, str(published)
    train = ["train", "--lake", lake, "--registry", registry, "--keep", "1", "--epochs", "1"]
    train += ["--no-progress", "--dim", "8", "--max-len", "8", "--batch-size", "64"]
    for _ in range(2):
        trained = towerline_here(*train)
        assert trained.code == 0, str(trained)
    assert list_versions(registry, "two_tower") == ["v1", "v3"]  # v2: neither newest nor live


# --- 2. evaluate on nothing is an error, not a row of zeros --------------------------


def test_evaluate_names_a_missing_lake(registry: Path, tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    ran = towerline_here("evaluate", "--lake", nowhere, "--registry", registry)
    assert_user_error(ran, 2, "no lake at", str(nowhere))


def test_evaluate_names_a_window_without_events(registry: Path, world: Path, tmp_path: Path):
    elsewhere = tmp_path / "lake"
    first = sorted((world / "offsite_conversions").iterdir())[0]
    shutil.copytree(first, elsewhere / "offsite_conversions" / "dt=2025-06-01")
    ran = towerline_here("evaluate", "--lake", elsewhere, "--registry", registry, "--json")
    assert_user_error(ran, 2, "no offsite_conversions events", "2025-06-28..2025-06-30")
    (tmp_path / "empty").mkdir()
    ran = towerline_here("evaluate", "--lake", tmp_path / "empty", "--registry", registry)
    assert_user_error(ran, 2, "no offsite_conversions events", str(tmp_path / "empty"))


# --- 7. registry and integrity errors: one line -------------------------------------


def test_evaluate_registry_errors_are_one_line(world: Path, registry: Path) -> None:
    ran = towerline_here("evaluate", "--lake", world, "--registry", registry, "--version", "v9")
    assert_user_error(ran, 2, "no version 'v9'")
    tamper(registry, "online.pt")
    ran = towerline_here("evaluate", "--lake", world, "--registry", registry)
    assert_user_error(ran, 1, "online.pt does not match its sha256")


def test_encode_registry_errors_leave_the_states_as_they_were(lake: Path, registry: Path):
    encode_here(lake, registry)
    before = snapshot(lake / STATES)
    ran = towerline_here(*encode_cmd(lake, registry, "--version", "v9"), *IN_MEMORY)
    assert_user_error(ran, 2, "no version 'v9'")
    tamper(registry)
    ran = towerline_here(*encode_cmd(lake, registry, "--version", "v1"), *IN_MEMORY)
    assert_user_error(ran, 1, "encoder.pt does not match its sha256")
    assert snapshot(lake / STATES) == before


# --- 3. publish checks which model wrote the states ---------------------------------


def test_publish_refuses_the_states_of_another_model(lake: Path, registry: Path) -> None:
    encode_here(lake, registry)  # two_tower v1's states, recorded as such
    pins = read_pins(lake)
    cfg = ModelConfig.for_data(len(pins), pins.max_interest_id, **TINY_MODEL)
    save_model(registry, TwoTower.build(cfg, seed=7).eval(), WINDOW, {}, model_name="other")
    indexes = lake.parent / "indexes"
    build_index(indexes, registry, "v1", model="other")
    before = snapshot(indexes)
    ran = towerline_here(
        "publish", "--model-name", "other", "--version", "v1", "--registry", registry,
        "--indexes", indexes, "--lake", lake, "--no-online-check",
    )  # fmt: skip
    assert_user_error(ran, 1, "written by model 'two_tower', not 'other'")
    assert snapshot(indexes) == before  # no serving.json


# --- 5. names that would become paths -----------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--lake", "{lake}", "--registry", "{out}/registry"],
        ["batch", "index", "--corpus", "{lake}", "--registry", "{out}/r", "--indexes", "{out}/i"],
        ["index", "rollback", "--indexes", "{out}/indexes"],
        ["publish", "--version", "v1", "--registry", "{out}/r", "--indexes", "{out}/i"]
        + ["--lake", "{lake}", "--no-online-check"],
        ["evaluate", "--lake", "{lake}", "--registry", "{out}/registry"],
        ["batch", "encode", "--lake", "{lake}", "--dt", "2025-06-30", "--registry", "{out}/r"],
    ],
    ids=["train", "batch-index", "index-rollback", "publish", "evaluate", "batch-encode"],
)
def test_model_names_that_are_paths_are_refused(
    command: list[str], world: Path, tmp_path: Path
) -> None:
    out = tmp_path / "deep" / "er"
    args = [a.format(lake=world, out=out) for a in command]
    ran = towerline_here(*args, "--model-name", "../../x")
    assert_user_error(ran, 2, "--model-name", "not a plain name")
    assert not any(tmp_path.rglob("*x*")) and not out.exists()


# --- 6. a corrupt or foreign Parquet file is named before anything is written --------


def test_corpus_names_a_corrupt_file_and_keeps_the_last_corpus(lake: Path) -> None:
    corpus = ["batch", "corpus", "--lake", lake, "--dt", str(END), "--half-life", "7d"]
    first = towerline_here(*corpus, "--top-m", "20", *IN_MEMORY)
    assert first.code == 0, str(first)
    before = snapshot(lake / "corpus")
    bad = sorted((lake / "engagements").rglob("*.parquet"))[-1]
    bad.write_bytes(bad.read_bytes()[:-64])  # a truncated copy: no footer
    ran = towerline_here(*corpus, *IN_MEMORY)
    assert_user_error(ran, 2, str(bad), "not a readable Parquet file")
    assert snapshot(lake / "corpus") == before


def test_corpus_creates_no_directory_for_a_foreign_file(lake: Path, tmp_path: Path) -> None:
    bad = sorted((lake / "engagements").rglob("*.parquet"))[0]
    pq.write_table(pa.table({"pin_id": [1.5], "action": ["SAVE"]}), bad)
    out = tmp_path / "out"
    ran = towerline_here(
        "batch", "corpus", "--lake", lake, "--dt", str(END), "--half-life", "7d", "--out", out,
        *IN_MEMORY,
    )  # fmt: skip
    assert_user_error(ran, 2, str(bad), "column 'pin_id' is double", "needs int64")
    assert not out.exists()


def test_encode_names_a_bad_file_and_keeps_the_last_states(lake: Path, registry: Path) -> None:
    encode_here(lake, registry)
    before = snapshot(lake / STATES)
    bad = sorted((lake / "offsite_conversions").rglob("*.parquet"))[0]
    bad.write_bytes(b"not parquet at all")
    ran = towerline_here(*encode_cmd(lake, registry), *IN_MEMORY)
    assert_user_error(ran, 2, str(bad), "not a readable Parquet file")
    pq.write_table(pa.table({"user_id": ["u1"], "pin_id": [1]}), bad)
    ran = towerline_here(*encode_cmd(lake, registry), *IN_MEMORY)
    assert_user_error(ran, 2, str(bad), "column 'user_id' is string")
    assert snapshot(lake / STATES) == before


# --- 4. Ctrl-C during batch encode ---------------------------------------------------

# What each multi_processing SDK worker prints while it starts, before any pipeline option
# reaches it (so --default_sdk_harness_log_level cannot quiet it): not this CLI's output.
WORKER_STARTUP = (
    "WARNING:root:apitools not found",
    "INFO:__main__:Logging handler created",
    "WARNING:__main__:No semi_persistent_directory found",
)


def _workers(pid: int) -> list[int]:
    """SDK worker processes below ``pid`` (the default runner's multi_processing mode)."""
    from batch.interrupt import descendants

    found = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"sdk_worker_main" in cmdline:
            found.append(child)
    return found


def test_ctrl_c_stops_the_encode_at_once_and_keeps_the_last_states(
    lake: Path, registry: Path
) -> None:
    encode_here(lake, registry)
    before = snapshot(lake / STATES)
    args = [*encode_cmd(lake, registry), "--shards", "4"]  # default runner: 2 worker processes
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "towerline.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, so the SIGINT below reaches only it
    )
    try:
        deadline = time.monotonic() + 120
        while not (workers := _workers(child.pid)) and child.poll() is None:
            assert time.monotonic() < deadline, "the encode never started its workers"
            time.sleep(0.05)
        assert workers, "the job ended before its workers were seen"
        # To the whole foreground group, as a terminal's Ctrl-C; the pipeline cannot have
        # finished: its workers just began.
        os.killpg(child.pid, signal.SIGINT)
        stdout, stderr = child.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        for pid in [*_workers(child.pid), child.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stdout, stderr = child.communicate(timeout=20)
        pytest.fail(f"still running 20 s after Ctrl-C; its stderr:\n{stderr[-4000:]}")
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=20)
    own = "\n".join(line for line in stderr.splitlines() if not line.startswith(WORKER_STARTUP))
    ran = Ran(tuple(args), child.returncode, stdout, own)
    assert_user_error(ran, 130, "interrupted", "stopped before publishing")
    assert snapshot(lake / STATES) == before  # no staging left, the last states intact
    assert not _alive(workers, wait_s=5), "a worker outlived the job"


def _alive(pids: list[int], wait_s: float) -> list[int]:
    """Which of ``pids`` still run (a zombie waiting to be reaped does not) after up to
    ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        running = []
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2] != "Z":
                running.append(pid)
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def test_train_and_evaluate_name_a_corrupt_lake_file(lake: Path, registry: Path) -> None:
    pins = sorted((lake / "pins").glob("*.parquet"))[0]
    pins.write_bytes(b"not parquet at all")
    ran = towerline_here("train", "--lake", lake, "--registry", registry, "--epochs", "1")
    assert_user_error(ran, 2, str(pins), "not a readable Parquet file")
    ran = towerline_here("evaluate", "--lake", lake, "--registry", registry)
    assert_user_error(ran, 2, str(pins))
