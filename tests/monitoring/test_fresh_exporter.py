"""`towerline freshness serve`: every measure and SLO as gauges on a real /metrics."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from monitor_kit import HOUR, NOW, record
from prometheus_client.parser import text_string_to_metric_families

from monitoring.exporter import Exporter
from monitoring.model import (
    BREACH,
    LAG_EVENT_TIME,
    OK,
    RUN_AGE,
    UNKNOWN,
    Measure,
    SloResult,
    Snapshot,
)
from serving.server import free_port
from tests.cli.cli_kit import ROOT, child_env
from towerline.core.ledger import SUCCESS


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_gauges_follow_the_latest_snapshot(tmp_path: Path) -> None:
    taken = iter(range(100))

    def fake_collect() -> Snapshot:
        i = next(taken)
        measures = (
            Measure("user_profile", RUN_AGE, 100.0 + i, job="load-profiles"),
            Measure("user_realtime_seq", LAG_EVENT_TIME, None, partition="3", note="not yet"),
        )
        slos = (
            SloResult(
                "user_profile_run_age",
                "user_profile",
                RUN_AGE,
                93600.0,
                "max",
                OK if i == 0 else BREACH,
                100.0,
            ),  # fmt: skip
            SloResult("lag", "user_realtime_seq", LAG_EVENT_TIME, 60.0, "max", UNKNOWN, None),
        )
        return Snapshot(NOW + i * HOUR, measures, slos, unreachable=("kafka h:1",))

    exporter = Exporter(fake_collect, interval_s=0.2)
    port = exporter.start(free_port())
    try:
        first = _samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        key = ("towerline_freshness_value", (("host", ""), ("job", "load-profiles"), ("measure", RUN_AGE), ("partition", ""), ("view", "user_profile")))  # fmt: skip
        assert first[key] == 100.0
        assert not any(k[0] == "towerline_freshness_value" and ("partition", "3") in k[1] for k in first)  # fmt: skip
        ok_key = ("towerline_slo_ok", (("measure", RUN_AGE), ("slo", "user_profile_run_age"), ("view", "user_profile")))  # fmt: skip
        assert first[ok_key] == 1.0
        assert not any(k[0] == "towerline_slo_ok" and ("slo", "lag") in k[1] for k in first)
        assert first[("towerline_slo_target", (("measure", LAG_EVENT_TIME), ("slo", "lag"), ("view", "user_realtime_seq")))] == 60.0  # fmt: skip
        assert first[("towerline_freshness_source_up", (("source", "kafka h:1"),))] == 0.0
        deadline = time.monotonic() + 10
        while exporter.collections < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        later = _samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        assert later[key] > 100.0 and later[ok_key] == 0.0  # the background thread re-collected
    finally:
        exporter.stop()


def test_serve_command_exposes_the_ledger_as_gauges(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    record(ledger, "load-profiles", SUCCESS, dt.datetime.now(dt.UTC) - 30 * HOUR)
    port = free_port()
    args = ["freshness", "serve", "--port", str(port), "--interval", "1s", "--ledger", str(ledger)]
    args += ["--online", "sqlite", "--data-dir", str(tmp_path / "feast"), "--project", "tl_mon_srv"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "towerline.cli", *args],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline, text = time.monotonic() + 90, ""
        while "towerline_freshness_value{" not in text:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the monitor never served /metrics"
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.ConnectionError:
                time.sleep(0.3)
        samples = _samples(text)
        age = [v for (name, labels), v in samples.items() if name == "towerline_freshness_value" and ("view", "user_profile") in labels and ("measure", RUN_AGE) in labels]  # fmt: skip
        assert age and 30 * 3600 <= age[0] < 31 * 3600
        assert samples[("towerline_slo_ok", (("measure", RUN_AGE), ("slo", "user_profile_run_age"), ("view", "user_profile")))] == 0.0  # fmt: skip
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
