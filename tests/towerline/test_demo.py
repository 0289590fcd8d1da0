"""The demo end to end: its own dev broker, real Feast (SQLite), real lake; quiet on the
terminal, library logs in its log file, figures that measure what they say."""

import datetime as dt
import re
from pathlib import Path

from rich.console import Console

from tests.cli.cli_kit import assert_user_error, towerline
from towerline.demo import DemoConfig, run_demo
from towerline.demo.workdir import MARKER

SMALL = ("--users", "200", "--pins", "400", "--days", "3")
# A library's log line ("WARNING:root:…", "2026-… ERROR kafka…: …"), a traceback, a warning.
NOISE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback \(most recent call last\)|\w+Warning\b")


def test_demo_is_quiet_truthful_and_keeps_to_its_workdir(tmp_path):
    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")

    # A directory the demo did not create is refused, untouched ...
    refused = towerline("demo", "--workdir", workdir, *SMALL)
    assert_user_error(refused, 1, str(workdir), "--force")
    assert [p.name for p in workdir.iterdir()] == ["notes.txt"]

    # ... and taken with --force: the whole demo through the CLI, as `make demo` runs it.
    ran = towerline("demo", "--workdir", workdir, "--force", *SMALL, timeout=280)
    assert "freshness report: " in ran.stdout and "SLOs: " in ran.stdout, str(ran)
    assert ran.code == 0, str(ran)
    noisy = [line for line in (ran.stdout + ran.stderr).splitlines() if NOISE.search(line)]
    assert not noisy, f"library output on the terminal: {noisy}\n{ran}"
    log = workdir / "towerline.log"
    assert log.is_file() and log.stat().st_size > 0
    assert str(log) in ran.stdout, "the demo must say where the library logs are"
    epochs = re.findall(r"^\s*epoch \d+: loss [\d.]+", ran.stdout, flags=re.MULTILINE)
    assert len(epochs) == 2, f"one line per epoch (demo trains 2):\n{ran.stdout}"
    assert "epoch 1/2" not in ran.stdout + ran.stderr, "no per-epoch progress bars"
    assert (workdir / "notes.txt").read_text() == "mine" and (workdir / MARKER).is_file()

    # A second run, in-process, in the same (now marked) workdir needs no --force.
    cfg = DemoConfig(
        workdir=workdir,
        users=200,
        pins=400,
        days=3,
        # Yesterday, as the CLI does; the replay restamps the events to now anyway.
        end_date=dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1),
    )
    console = Console(file=open(tmp_path / "out.txt", "w"), width=120)  # noqa: SIM115
    summary = run_demo(cfg, console=console)
    _check_summary(summary)
    assert not (cfg.workdir / "run" / "broker.json").exists(), "the demo must stop its broker"
    assert summary["log"] == str(log)


def _check_summary(summary: dict) -> None:
    replay = summary["replay"]
    assert replay["sent"] > 0 and replay["consumed"] == replay["sent"]
    assert replay["undecodable"] == 0 and replay["errors"] == []
    assert sum(replay["by_action"].values()) == replay["sent"]
    assert summary["profiles"]["rows"] == {"user_profile": 200, "pin_profile": 400}
    assert summary["profiles"]["user_1"]["age_bucket"].startswith("AGE_")
    assert 1 <= len(summary["profiles"]["pin_1"]["interest_ids"]) <= 3
    stream = replay["stream"]
    assert stream["caught_up"] and stream["applied"] == replay["sent"]
    assert stream["dead_lettered"] == 0
    # Restamped replay: freshness is the pipeline's, not the age of yesterday's events;
    # and latency is measured after the group join (~3 s on the dev broker), not across it.
    assert 0 <= stream["freshness_ms"]["p50"] < 10_000, stream
    assert 0 <= stream["pipeline_latency_ms"]["p50"] < 2_000, stream
    batch = summary["batch"]
    assert batch["encoded_users"] == 200
    assert batch["serving"]["model_version"] == batch["version"] == batch["index"]["model_version"]
    assert batch["index"]["num_items"] > 0
    assert [row["epoch"] for row in batch["epochs"]] == [1, 2]
    serving = summary["serving"]
    kinds = [row["request"] for row in serving["requests"]]
    assert len(kinds) == 5 and all(row["version"] in ("v1", "-") for row in serving["requests"])
    assert serving["requests"][3]["history"] == "missing"  # the unknown user: cold start
    swaps = serving["swaps"]
    assert swaps["served"] == "v1 → v2 → v1" and swaps["failed"] == 0 and swaps["requests"] > 10
    fresh = summary["freshness"]
    assert Path(fresh["report"]).is_file() and "<svg" in Path(fresh["report"]).read_text()
    # The demo's batch runs are minutes old and the worker just applied the day: the batch
    # views' run ages and the stream's pipeline freshness hold their SLOs.
    for slo in ("user_profile_run_age", "pin_profile_run_age", "user_history_state_run_age"):
        assert fresh["slos"][slo] == "ok", fresh["table"]
    assert "user_realtime_seq" in fresh["table"] and "index_age" in fresh["table"]
    # One retrain cycle after the first publish: a gate table, and the served version
    # follows the decision.
    retrain = summary["retrain"]
    assert "with_context.recall@50" in retrain["table"] and "gate " in retrain["table"]
    if retrain["decision"] == "published":
        assert (
            retrain["served_after"] == retrain["candidate"]["version"] != retrain["served_before"]
        )
    else:
        assert (
            retrain["decision"] == "rejected"
            and retrain["served_after"] == retrain["served_before"]
        )
