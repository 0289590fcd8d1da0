"""The shipped Prometheus files, checked by the real `promtool` (Debian package `prometheus`).

``alerts.yml`` must be what ``monitoring.alerts`` renders from the shipped SLOs (so the two
never drift), pass ``promtool check rules``, and have one ``promtool test rules`` file per
alert under ``monitoring/prometheus/tests/`` showing it fire on a breaching series and stay
quiet on a healthy one; ``prometheus.yml`` must pass ``promtool check config`` and scrape
the ports the commands listen on by default.
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.alerts import ALERTS_FILE, MONITOR_ALERT, MONITOR_JOB, alert_name, render_alerts
from monitoring.slo import Slo, declared_view_targets, load_slos

PROM_DIR = ALERTS_FILE.parent
CONFIG = PROM_DIR / "prometheus.yml"
UNIT_TESTS = sorted((PROM_DIR / "tests").glob("*.test.yml"))


def promtool(*args: str | Path, cwd: Path = PROM_DIR) -> str:
    """``promtool ARGS``; a missing promtool fails the test (never a skip)."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool not found: install the Debian package `prometheus` (`make setup` does)",
            pytrace=False,
        )
    done = subprocess.run(
        [exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def shipped_slos() -> tuple[Slo, ...]:
    return load_slos(None, declared_view_targets())


def _rules(text: str) -> list[dict]:
    (group,) = yaml.safe_load(text)["groups"]
    return group["rules"]


def test_shipped_alerts_are_the_rendering_of_the_shipped_slos(
    shipped_slos: tuple[Slo, ...],
) -> None:
    assert ALERTS_FILE.read_text() == render_alerts(shipped_slos), (
        "monitoring/prometheus/alerts.yml is stale: run `.venv/bin/python -m monitoring.alerts`"
    )


def test_one_rule_per_slo_on_its_view_measure_and_target(shipped_slos: tuple[Slo, ...]) -> None:
    rules = {r["alert"]: r for r in _rules(ALERTS_FILE.read_text())}
    assert set(rules) == {alert_name(s.name) for s in shipped_slos} | {MONITOR_ALERT}
    skew = rules["VersionSkew"]
    assert skew["expr"] == 'towerline_freshness_value{view="serving",measure="version_skew_versions"} > 0'  # fmt: skip
    assert skew["for"] == "10m" and skew["labels"] == {"severity": "page", "slo": "version_skew"}
    run_age = rules["UserProfileRunAge"]
    assert run_age["expr"].endswith('measure="run_age_seconds"} > 93600') and run_age["for"] == "0s"
    assert "humanizeDuration" in run_age["annotations"]["summary"]
    assert rules["ServedStatesCoverage"]["expr"].endswith("< 0.95")
    assert "humanizePercentage" in rules["ServedStatesCoverage"]["annotations"]["description"]
    for rule in rules.values():
        assert {"summary", "description"} <= set(rule["annotations"])
        assert rule["labels"]["severity"] in ("page", "ticket")


def test_rules_follow_the_view_tags_and_pass_promtool(tmp_path: Path) -> None:
    """Another target on a view's tag changes its rule, and the output stays valid."""
    targets = {**declared_view_targets(), "pin_profile": 7200.0}
    slos = load_slos(None, targets)
    text = render_alerts(slos)
    rule = {r["alert"]: r for r in _rules(text)}["PinProfileRunAge"]
    assert rule["expr"].endswith("> 7200") and "target <= 2h" in rule["annotations"]["summary"]
    (tmp_path / "alerts.yml").write_text(text)
    out = promtool("check", "rules", tmp_path / "alerts.yml")
    assert f"SUCCESS: {len(slos) + 1} rules found" in out


def test_promtool_check_rules_accepts_the_shipped_alerts(shipped_slos: tuple[Slo, ...]) -> None:
    out = promtool("check", "rules", ALERTS_FILE)
    assert f"SUCCESS: {len(shipped_slos) + 1} rules found" in out


def test_promtool_check_config_accepts_the_shipped_config() -> None:
    out = promtool("check", "config", CONFIG)
    assert "is valid prometheus config file syntax" in out and "1 rule files found" in out


def _default(command: object, option: str) -> object:
    return inspect.signature(command).parameters[option].default


def test_the_config_scrapes_the_default_ports_and_loads_the_alerts() -> None:
    from towerline.cli.freshness import serve_cmd as freshness_serve
    from towerline.cli.serve import serve_cmd
    from towerline.cli.stream import stream_run_cmd

    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {name: job["static_configs"][0]["targets"] for name, job in jobs.items()}
    assert targets[MONITOR_JOB] == [f"127.0.0.1:{_default(freshness_serve, 'port')}"]
    assert jobs[MONITOR_JOB]["honor_labels"] is True  # its `job` label names the batch job
    assert targets["towerline-stream"] == [f"127.0.0.1:{_default(stream_run_cmd, 'metrics_port')}"]
    assert targets["towerline-serve"] == [f"127.0.0.1:{_default(serve_cmd, 'port')}"]


def test_every_alert_has_exactly_one_unit_test_file(shipped_slos: tuple[Slo, ...]) -> None:
    tested: dict[str, list[str]] = {}
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../alerts.yml"], path.name
        names = {t["alertname"] for group in doc["tests"] for t in group["alert_rule_test"]}
        assert len(names) == 1, f"{path.name} tests {sorted(names)}: one alert per file"
        tested.setdefault(names.pop(), []).append(path.name)
    expected = {alert_name(s.name) for s in shipped_slos} | {MONITOR_ALERT}
    assert set(tested) == expected
    assert all(len(files) == 1 for files in tested.values()), tested


@pytest.mark.parametrize(
    "path", UNIT_TESTS, ids=[p.name.removesuffix(".test.yml") for p in UNIT_TESTS]
)
def test_promtool_unit_test(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    checks = [t for group in doc["tests"] for t in group["alert_rule_test"]]
    # Each file shows the alert quiet on healthy data and firing on the breach.
    assert any(not t["exp_alerts"] for t in checks) and any(t["exp_alerts"] for t in checks)
    assert "SUCCESS" in promtool("test", "rules", path.name, cwd=path.parent)


def test_promtool_unit_tests_catch_a_wrong_rule(tmp_path: Path) -> None:
    """The unit tests can fail: the same test against a rule with a looser target does."""
    rules = (tmp_path / "alerts.yml").resolve()
    rules.write_text(ALERTS_FILE.read_text().replace("> 93600", "> 200000"))
    test = tmp_path / "tests" / "user_profile_run_age.test.yml"
    test.parent.mkdir()
    test.write_text((PROM_DIR / "tests" / test.name).read_text())
    exe = shutil.which("promtool") or pytest.fail("promtool not found", pytrace=False)
    done = subprocess.run(
        [exe, "test", "rules", test.name], cwd=test.parent, capture_output=True, text=True
    )
    assert done.returncode != 0 and "UserProfileRunAge" in done.stdout + done.stderr
