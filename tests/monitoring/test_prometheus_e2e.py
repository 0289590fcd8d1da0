"""A real Prometheus, with the shipped config and alert rules, scrapes a real
`towerline freshness serve` and sees a batch view made stale on purpose go to firing.

Only the scrape targets and intervals of ``monitoring/prometheus/prometheus.yml`` are
rewritten for the test (its ports, 1 s instead of 15 s); the rule file is the shipped one.
The world: a run ledger whose last `load-profiles` success is 30 h old (user_profile and
pin_profile are stale against their 26 h tag) and whose last `batch encode` is 1 h old
(user_history_state is fresh).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.alerts import ALERTS_FILE, MONITOR_JOB
from towerline.core import ledger

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ALERTS_FILE.parent / "prometheus.yml"
TOWERLINE = Path(sys.executable).parent / "towerline"
FIRING_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen, timeout_s: float) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{_output(proc)}", pytrace=False)
        try:
            if ready():
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} not ready after {timeout_s:.0f} s:\n{_output(proc)}", pytrace=False)


def _output(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out[-4000:] if out else ""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _stale_world(path: Path, now: dt.datetime) -> Path:
    for job, hours_ago in (("load-profiles", 30), ("batch encode", 1)):
        finished = now - dt.timedelta(hours=hours_ago)
        record = ledger.RunRecord(
            job=job,
            outcome=ledger.SUCCESS,
            started_at=finished - dt.timedelta(minutes=5),
            finished_at=finished,
            views=ledger.JOB_VIEWS[job],
        )
        ledger.append(path, record)
    return path


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[int]:
    """`towerline freshness serve` over the stale world; yields its port."""
    path = _stale_world(tmp_path / "ledger.jsonl", dt.datetime.now(dt.UTC))
    port = _free_port()
    argv = [
        str(TOWERLINE), "freshness", "serve", "--port", str(port), "--interval", "1s",
        "--ledger", str(path), "--data-dir", str(tmp_path / "feast"),
        "--project", f"prom_{uuid.uuid4().hex[:8]}", "--history", str(tmp_path / "history.jsonl"),
    ]  # fmt: skip
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        _wait_for("towerline freshness serve", lambda: "run_age_seconds" in _get(url), proc, 90)
        yield port
    finally:
        _stop(proc)


def _test_config(tmp_path: Path, monitor_port: int) -> Path:
    """The shipped config with the test's targets and 1 s intervals; rules as shipped."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    config["rule_files"] = [str((CONFIG.parent / f).resolve()) for f in config["rule_files"]]
    for job in config["scrape_configs"]:
        # Nothing listens for the stream workers and serving hosts: they are scraped as down.
        port = monitor_port if job["job_name"] == MONITOR_JOB else _free_port()
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def prometheus(tmp_path: Path, monitor: int) -> Iterator[str]:
    """A real `prometheus` on a free loopback port scraping the monitor; yields its URL."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail(
            "prometheus not found: install the Debian package `prometheus` (`make setup` does)",
            pytrace=False,
        )
    port = _free_port()
    argv = [
        exe, f"--config.file={_test_config(tmp_path, monitor)}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for("prometheus", lambda: "Ready" in _get(f"{url}/-/ready"), proc, 30)
        yield url
    finally:
        _stop(proc)


def _api(url: str, path: str) -> Any:
    doc = json.loads(_get(f"{url}/api/v1/{path}"))
    assert doc["status"] == "success", doc
    return doc["data"]


def _alerts(url: str, name: str) -> list[dict[str, Any]]:
    return [a for a in _api(url, "alerts")["alerts"] if a["labels"]["alertname"] == name]


def test_a_stale_view_goes_to_firing_and_a_fresh_one_does_not(prometheus: str) -> None:
    rules = _api(prometheus, "rules")["groups"]
    shipped = yaml.safe_load(ALERTS_FILE.read_text())["groups"][0]["rules"]
    assert len(rules[0]["rules"]) == len(shipped)  # the shipped rule file is the one loaded

    deadline = time.monotonic() + FIRING_TIMEOUT_S
    while time.monotonic() < deadline and not any(
        a["state"] == "firing" for a in _alerts(prometheus, "UserProfileRunAge")
    ):
        time.sleep(0.5)
    (alert,) = _alerts(prometheus, "UserProfileRunAge")
    assert alert["state"] == "firing", f"not firing after {FIRING_TIMEOUT_S:.0f} s: {alert}"
    # The monitor's own `job` label names the batch job (honor_labels in the shipped config).
    assert alert["labels"]["view"] == "user_profile" and alert["labels"]["job"] == "load-profiles"
    assert alert["labels"]["severity"] == "page"
    assert 30 * 3600 <= float(alert["value"]) < 31 * 3600
    summary = alert["annotations"]["summary"]
    assert summary.startswith("user_profile, job load-profiles: run age 1d 6h"), summary
    assert summary.endswith("target <= 26h"), summary
    assert [a["state"] for a in _alerts(prometheus, "PinProfileRunAge")] == ["firing"]

    # user_history_state ran 1 h ago: scraped and evaluated, yet no alert of any state.
    fresh = _api(prometheus, 'query?query=towerline_freshness_value{view="user_history_state"}')
    assert fresh["result"], "the fresh view's run age was not scraped"
    assert 3600 <= float(fresh["result"][0]["value"][1]) < 2 * 3600
    assert _alerts(prometheus, "UserHistoryStateRunAge") == []
    up = _api(prometheus, f'query?query=up{{job="{MONITOR_JOB}"}}')["result"]
    assert [sample["value"][1] for sample in up] == ["1"]
