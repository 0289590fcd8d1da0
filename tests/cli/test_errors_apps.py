"""How the apps fail at the CLI: generate, import movielens, produce, demo.

One `error:` line naming what was wrong, the documented exit code, and nothing half-done
left behind (no partial world, no half-replaced lake, no deleted workdir).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cli.cli_kit import ROOT, Ran, assert_user_error, snapshot, towerline, towerline_here

FIXTURES = ROOT / "tests" / "fixtures" / "movielens"
DAY = "2025-06-30"


def _interrupted_generate(out: Path) -> Ran:
    """Start a world that takes seconds, Ctrl-C it once its staging dir holds files."""
    argv = [sys.executable, "-m", "towerline.cli", "generate", "--out", str(out),
            "--users", "100000", "--pins", "20000", "--days", "30", "--end-date", DAY,
            "--no-progress"]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(out.parent.glob(f".{out.name}.staging-*/pins/*.parquet")):
            assert proc.poll() is None, "generate finished before it could be interrupted"
            assert time.monotonic() < deadline, "no staging directory appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Ran(tuple(argv[3:]), proc.returncode, stdout, stderr)


def test_an_interrupted_generate_leaves_nothing_at_out(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    ran = _interrupted_generate(out)
    assert_user_error(ran, 130, "interrupted")
    assert list(tmp_path.iterdir()) == [], "no partial world and no staging dir"


def test_an_interrupted_generate_leaves_an_empty_out_empty(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    out.mkdir()
    ran = _interrupted_generate(out)
    assert ran.code == 130, str(ran)
    assert [p.name for p in tmp_path.iterdir()] == ["lake"] and not any(out.iterdir())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--end-date", "2025-13-45"), "--end-date"),
        (("--pins", "5"), "--pins"),
        (("--session-rate", "1.5"), "--session-rate"),
    ],
)
def test_generate_bad_options(tmp_path: Path, args, needle) -> None:
    ran = towerline_here("generate", "--out", tmp_path / "w", "--users", "10", *args)
    assert_user_error(ran, 2, needle)
    assert not (tmp_path / "w").exists()


def test_generate_session_knobs_reach_the_world(tmp_path: Path) -> None:
    import json

    for rate, name in ((0.0, "none"), (1.0, "all")):
        out = tmp_path / name
        ran = towerline_here(
            "generate", "--out", out, "--users", "20", "--pins", "64", "--days", "2",
            "--session-rate", rate, "--session-explore", "0.25", "--no-progress",
        )  # fmt: skip
        assert ran.code == 0, str(ran)
        world = json.loads((out / "world.json").read_text())
        assert world["config"]["session_rate"] == rate
        assert world["config"]["session_explore"] == 0.25
        sessions = world["counts"]["session_conversions"]
        assert (sessions == 0) if rate == 0 else (sessions > 0)


def test_generate_refuses_a_non_empty_out(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    ran = towerline_here("generate", "--out", tmp_path, "--users", "10", "--days", "1")
    assert_user_error(ran, 2, str(tmp_path), "not an empty directory")
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize(
    "ratings",
    ["", "x\t1\t5\t881107200\n1\t1\t9\t881107200\n1\t2\n"],
    ids=["empty", "all-malformed"],
)
def test_import_without_a_valid_rating_keeps_the_lake(tmp_path: Path, ratings: str) -> None:
    lake = tmp_path / "lake"
    first = towerline_here("import", "movielens", FIXTURES / "ml-1m", "--out", lake)
    assert first.code == 0, str(first)
    before = snapshot(lake)
    src = tmp_path / "ml-100k"
    shutil.copytree(FIXTURES / "ml-100k", src)
    (src / "u.data").write_text(ratings)

    ran = towerline_here("import", "movielens", src, "--out", lake, "--overwrite")

    assert_user_error(ran, 2, str(src / "u.data"), "nothing was imported")
    assert snapshot(lake) == before
    assert sorted(p.name for p in lake.iterdir()) == ["offsite_conversions", "pins", "users"]


def _wrong_schema_partition(lake: Path) -> None:
    """Engagements whose actions are offsite-conversion actions: every record fails."""
    gen = towerline_here("generate", "--out", lake, "--users", "50", "--pins", "64",
                         "--days", "1", "--end-date", DAY, "--no-progress")  # fmt: skip
    assert gen.code == 0, str(gen)
    part = lake / "engagements" / f"dt={DAY}"
    shutil.rmtree(part)
    shutil.copytree(lake / "offsite_conversions" / f"dt={DAY}", part)


@pytest.mark.kafka
def test_produce_names_why_records_failed(tmp_path: Path, kafka_broker) -> None:
    lake = tmp_path / "lake"
    _wrong_schema_partition(lake)
    rows = pq.read_table(lake / "engagements" / f"dt={DAY}").num_rows
    ran = towerline("produce", "engagements", "--lake", lake, "--dt", DAY,
                    "--bootstrap-servers", kafka_broker.bootstrap, "--no-progress")  # fmt: skip
    assert_user_error(ran, 1, f"{rows} records failed", "Engagement.action", "is not a valid")


def test_produce_refuses_a_partition_of_the_wrong_types(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _wrong_schema_partition(lake)
    part = lake / "engagements" / f"dt={DAY}"
    table = pq.read_table(part)
    for old in part.iterdir():
        old.unlink()
    pq.write_table(table.drop_columns(["action"]), part / "part-0.parquet")
    ran = towerline_here("produce", "engagements", "--lake", lake, "--dt", DAY,
                         "--bootstrap-servers", "127.0.0.1:1", "--no-progress")  # fmt: skip
    assert_user_error(ran, 2, str(part / "part-0.parquet"), "no column 'action'")


def test_produce_to_an_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _wrong_schema_partition(lake)
    ran = towerline_here("produce", "engagements", "--lake", lake, "--dt", DAY,
                         "--bootstrap-servers", "127.0.0.1:1", "--no-progress")  # fmt: skip
    assert_user_error(ran, 1, "cannot reach Kafka at 127.0.0.1:1")


def test_demo_refuses_a_workdir_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "precious.parquet").write_bytes(b"PAR1")
    before = snapshot(tmp_path)
    ran = towerline("demo", "--workdir", tmp_path, "--users", "20", "--pins", "64", "--days", "1")
    assert_user_error(ran, 1, str(tmp_path), "--force")
    assert snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["lake"]
