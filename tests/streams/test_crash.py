"""SIGKILL a worker process mid-stream, restart it: the online state is exactly the reference.

The killed worker is a real process (``python -m towerline.cli.stream``); the restarted one
runs in this process, in the same group, which saves a second interpreter start.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stream_kit import NAMESPACE, REDIS_URL, assert_online_matches, make_events, reference

from schemas.codec import AvroCodec
from streams.runner import run_worker_in_thread
from streams.stores import open_state_store
from towerline.core.featurestore import REPO_DIR

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
N, SEQ_LEN, HALF_LIFE_S = 12_000, 8, 6 * 3600.0


def spawn(tmp_path: Path, name: str, bootstrap: str, topic: str, project: str) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "towerline.cli.stream", "--group", "crash",
        "--bootstrap-servers", bootstrap, "--topic", topic, "--online", "redis",
        "--redis-url", REDIS_URL, "--project", project, "--data-dir", str(tmp_path / "feast"),
        "--repo", str(REPO_DIR), "--seq-len", str(SEQ_LEN), "--half-life", "6h",
        "--state-namespace", NAMESPACE, "--max-poll-records", "50",
        "--session-timeout-ms", "6000", "--heartbeat-interval-ms", "1000",
        "--metrics-port", "-1", "--log-level", "WARNING",
    ]  # fmt: skip
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_DIR.parent)


def applied(state, topic: str) -> int:
    """Records applied so far: offsets of a fresh topic run 0..n-1 per partition."""
    return sum(a + 1 for a in state.applied(topic, range(4)).values())


def wait_applied(state, topic: str, at_least: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120  # a cold interpreter imports Feast: slow on a busy box
    while (done := applied(state, topic)) < at_least:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"worker exited or stalled at {done}/{at_least}:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.005)


def test_sigkill_mid_stream_then_restart_gives_exactly_the_reference(
    tmp_path, feast_store, worker_cfg, new_topic, produce, bootstrap, project, redis_client
) -> None:
    codec, topic = AvroCodec(), new_topic("crash")
    events = make_events(N, users=300, pins=200, now_ms=int(time.time() * 1000), seed=5, seq_len=SEQ_LEN)  # fmt: skip
    produce(topic, [e.encode(codec) for e in events])
    store = feast_store("redis")
    state = open_state_store(store, NAMESPACE, HALF_LIFE_S * 1000)

    first = spawn(tmp_path, "first", bootstrap, topic, project)
    wait_applied(state, topic, len(events) // 4, first, tmp_path / "first.log")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    at_kill = applied(state, topic)
    assert at_kill < len(events), "the kill came too late to be mid-stream"

    cfg = worker_cfg(topic, group="crash", seq_len=SEQ_LEN, half_life_s=HALF_LIFE_S)
    with run_worker_in_thread(cfg, store) as second:
        assert second.wait_until(lambda _: applied(state, topic) >= len(events), 60), second.stats
    assert second.stats.consumed == len(events) - at_kill  # resumed exactly where it stopped
    assert_online_matches(store, reference(events, SEQ_LEN, HALF_LIFE_S * 1000))
    state.close()
