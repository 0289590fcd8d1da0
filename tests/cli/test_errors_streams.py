"""`towerline stream run` failing as a user error: one line naming what, the right exit code.

Each case runs the real CLI in a child process; none needs a broker (the addresses are
unreachable on purpose), the store is a private, applied SQLite one.
"""

import socket
import time
import uuid
from pathlib import Path

import pytest
import redis
from cli_kit import assert_user_error, towerline

from towerline.core.errors import EXIT_FAILED, EXIT_USAGE
from towerline.core.featurestore import REPO_DIR, apply_repo, open_store

NOWHERE = "127.0.0.1:1"  # nothing listens on port 1


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Options naming an applied Feast store of this module's own (SQLite)."""
    data_dir, project = tmp_path_factory.mktemp("feast"), f"tl_cli_{uuid.uuid4().hex[:8]}"
    apply_repo(open_store(REPO_DIR, project=project, data_dir=data_dir))
    return ["--data-dir", str(data_dir), "--project", project]


def stream_run(*args: str | Path, timeout: float = 120):
    return towerline("stream", "run", "--group", "g", *args, timeout=timeout)


def test_unreachable_kafka_is_one_line_naming_it_within_bounded_time(applied) -> None:
    started = time.monotonic()
    ran = stream_run("--bootstrap-servers", NOWHERE, "--metrics-port", "-1", *applied)
    assert_user_error(ran, EXIT_FAILED, f"cannot reach Kafka at {NOWHERE}", "--bootstrap-servers")
    assert time.monotonic() - started < 60, "gave up too late"
    assert "kafka.net" not in ran.stderr  # kafka-python's reconnect chatter stays quiet


def test_unreachable_redis_fails_at_start_naming_it(tmp_path: Path) -> None:
    ran = stream_run("--bootstrap-servers", NOWHERE, "--online", "redis", "--redis-url", NOWHERE,
                     "--data-dir", tmp_path, "--metrics-port", "-1")  # fmt: skip
    assert_user_error(ran, EXIT_FAILED, f"Redis online store at {NOWHERE}", "--redis-url")


def test_metrics_port_in_use_is_one_line_naming_the_port(applied) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = stream_run("--bootstrap-servers", NOWHERE, "--metrics-port", str(port), *applied)
    assert_user_error(ran, EXIT_USAGE, f"127.0.0.1:{port}", "--metrics-port")


def test_a_zero_half_life_is_refused_as_usage(tmp_path: Path) -> None:
    ran = stream_run("--bootstrap-servers", NOWHERE, "--half-life", "0s", "--data-dir", tmp_path)
    assert_user_error(ran, EXIT_USAGE, "--half-life", "0s")


def test_a_redis_state_namespace_in_an_older_layout_is_refused_in_one_line(tmp_path: Path) -> None:
    project, redis_url = f"tl_cli_{uuid.uuid4().hex[:8]}", "127.0.0.1:6379"
    store = open_store(REPO_DIR, online="redis", redis_url=redis_url, project=project, data_dir=tmp_path)  # fmt: skip
    apply_repo(store)
    client = redis.Redis(host="127.0.0.1", port=6379)
    offsets = f"towerline:streams:{project}:offsets"
    client.hset(offsets, "engagements:0", 41)  # what a worker before {ns}:layout left
    try:
        ran = stream_run("--bootstrap-servers", NOWHERE, "--online", "redis", "--redis-url", redis_url,
                         "--data-dir", tmp_path, "--project", project, "--metrics-port", "-1")  # fmt: skip
        assert_user_error(ran, EXIT_FAILED, "layout 1", "--state-namespace")
        assert client.hgetall(offsets) == {b"engagements:0": b"41"}  # left as it was
    finally:
        client.delete(offsets, f"towerline:streams:{project}:layout")
        client.close()
