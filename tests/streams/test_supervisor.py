"""Worker processes of one group (``streams.supervisor``, ``stream run --processes N``).

Real broker, real Redis, real forked workers: the group splits the partitions between the
processes, a SIGKILLed one's partitions are taken over by the other, and every event
counts exactly once. The command line is run as a real process for its exit paths.
"""

import contextlib
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from pathlib import Path

import psutil
import pytest
from stream_kit import (
    NAMESPACE,
    REDIS_URL,
    assert_online_matches,
    make_events,
    reference,
    trickle,
)

from schemas.codec import AvroCodec
from streams.config import WorkerConfig
from streams.stores import open_state_store
from streams.supervisor import Child, child_config, exited_error, start_workers, stop_workers
from towerline.core.featurestore import REPO_DIR, open_store

SEQ_LEN, HALF_LIFE_S = 8, 6 * 3600.0
CODEC = AvroCodec()


def test_each_child_gets_its_own_metrics_port() -> None:
    cfg = WorkerConfig(group_id="g", bootstrap="x:1", metrics_port=9108)
    assert [child_config(cfg, i).metrics_port for i in range(3)] == [9108, 9109, 9110]
    for port in (0, None):  # any free port / none: the same for every child
        same = WorkerConfig(group_id="g", bootstrap="x:1", metrics_port=port)
        assert child_config(same, 2).metrics_port == port


class _Ended:
    """Stands in for a finished process in ``exited_error``."""

    def __init__(self, exitcode: int) -> None:
        self.exitcode, self.pid = exitcode, 4242


@pytest.mark.parametrize(
    ("exitcode", "unasked", "code", "says"),
    [
        (-9, True, 1, "stream worker 2 of 3 (pid 4242) was killed by SIGKILL; the other"),
        (2, True, 2, "exited with code 2 (its error is logged above); the other"),
        (0, True, 1, "exited on its own; the other"),
        (7, False, 1, "exited with code 7 while stopping; the other"),
        (-15, False, 1, "was killed by SIGTERM while stopping; the other"),
    ],
)
def test_the_error_names_the_worker_and_how_it_ended(exitcode, unasked, code, says) -> None:
    err = exited_error(Child(1, 3, _Ended(exitcode), unasked=unasked), failed=1)  # type: ignore[arg-type]
    assert says in str(err) and err.exit_code == code
    assert "the other workers were stopped" in str(err)


def applied(state, topic: str) -> int:
    """Records applied so far: offsets of a fresh topic run 0..n-1 per partition."""
    return sum(a + 1 for a in state.applied(topic, range(4)).values())


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def applied_total(port: int) -> float:
    found = re.search(r"^towerline_stream_records_applied_total (\S+)$", scrape(port), re.M)
    return float(found.group(1)) if found else 0.0


def lag_partitions(port: int, topic: str) -> set[str]:
    """Partitions the worker reports lag for: the ones it holds."""
    pattern = rf'^towerline_stream_consumer_lag_records{{partition="(\d+)",topic="{topic}"}}'
    return set(re.findall(pattern, scrape(port), re.M))


def wait_for(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.kafka
@pytest.mark.redis
def test_two_processes_share_the_partitions_and_one_takes_over_a_killed_ones(
    tmp_path, feast_store, worker_cfg, new_topic, bootstrap, project, redis_client
) -> None:
    """Both apply; one is SIGKILLed mid-stream; the survivor ends with every partition and
    the online state is exactly the reference (= a single worker's result)."""
    topic = new_topic("procs")
    events = make_events(6000, users=300, pins=200, now_ms=int(time.time() * 1000), seed=8, seq_len=SEQ_LEN)  # fmt: skip
    store = feast_store("redis")
    state = open_state_store(store, NAMESPACE, HALF_LIFE_S * 1000)
    cfg = worker_cfg(topic, seq_len=SEQ_LEN, half_life_s=HALF_LIFE_S, max_poll_records=25, metrics_port=0)  # fmt: skip
    started = mp.get_context("fork").SimpleQueue()
    on_start = lambda i, _cfg, port: started.put((i, port))  # noqa: E731 (runs in the child)
    opened = partial(open_store, online="redis", redis_url=REDIS_URL, project=project, data_dir=tmp_path / "feast")  # fmt: skip
    children = start_workers(cfg, opened, 2, on_start=on_start)
    stream = threading.Thread(target=trickle, args=(bootstrap, topic, events, 15.0), daemon=True)
    try:
        ports = dict(started.get() for _ in children)  # both have their metrics endpoint
        stream.start()
        wait_for(lambda: min(applied_total(p) for p in ports.values()) > 0, 60, "both apply")
        victim, survivor = children[0], children[1]
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.join(10)
        assert applied(state, topic) < len(events), "the kill came too late to be mid-stream"
        wait_for(lambda: applied(state, topic) >= len(events), 90, "the survivor catches up")
        assert lag_partitions(ports[survivor.index], topic) == {"0", "1", "2", "3"}
        assert survivor.process.exitcode is None
    finally:
        stop_workers(children, grace_s=30)
    stream.join()
    assert survivor.process.exitcode == 0 and victim.process.exitcode == -signal.SIGKILL
    assert applied(state, topic) == len(events)  # each offset applied once, none skipped
    assert_online_matches(store, reference(events, SEQ_LEN, HALF_LIFE_S * 1000))
    state.close()


def _supervisor(cfg: WorkerConfig, opened, pids) -> None:
    """A forked stand-in for the command: start two workers, then wait to be killed."""
    pids.put([c.process.pid for c in start_workers(cfg, opened, 2)])
    time.sleep(600)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped
    except psutil.NoSuchProcess:
        return True


@pytest.mark.kafka
@pytest.mark.redis
def test_workers_do_not_outlive_a_killed_supervisor(
    tmp_path, feast_store, worker_cfg, new_topic, project, redis_client
) -> None:
    feast_store("redis")
    cfg = worker_cfg(new_topic("orphans"), metrics_port=None)
    opened = partial(open_store, online="redis", redis_url=REDIS_URL, project=project, data_dir=tmp_path / "feast")  # fmt: skip
    ctx = mp.get_context("fork")
    pids = ctx.SimpleQueue()
    supervisor = ctx.Process(target=_supervisor, args=(cfg, opened, pids))
    supervisor.start()
    workers = pids.get()
    time.sleep(1.0)  # into their group join
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.join(10)
    try:
        wait_for(lambda: all(gone(p) for p in workers), 30, "a worker outlived its supervisor")
    finally:  # no orphan left behind when it fails
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def cli(tmp_path: Path, name: str, bootstrap: str, topic: str, project: str) -> subprocess.Popen:
    """``towerline stream run --processes 2`` as a real process (stderr to ``name``.log)."""
    args = [
        sys.executable, "-m", "towerline.cli", "stream", "run", "--processes", "2",
        "--group", f"cli-{name}", "--bootstrap-servers", bootstrap, "--topic", topic,
        "--online", "redis", "--redis-url", REDIS_URL, "--project", project,
        "--data-dir", str(tmp_path / "feast"), "--repo", str(REPO_DIR), "--seq-len", str(SEQ_LEN),
        "--half-life", "6h", "--state-namespace", NAMESPACE, "--max-poll-records", "50",
        "--session-timeout-ms", "6000", "--heartbeat-interval-ms", "1000",
        "--metrics-port", "0", "--log-level", "WARNING",
    ]  # fmt: skip
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_DIR.parent)


def workers_of(proc: subprocess.Popen, log: Path) -> list[psutil.Process]:
    """The two worker processes, once both printed their start line."""
    deadline = time.monotonic() + 120  # a cold interpreter imports Feast: slow on a busy box
    while log.read_text().count("stream worker: group") < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the workers did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return psutil.Process(proc.pid).children()


@pytest.mark.kafka
@pytest.mark.redis
def test_cli_processes_stop_cleanly_on_sigterm(
    tmp_path, feast_store, new_topic, produce, bootstrap, project, redis_client
) -> None:
    """SIGTERM to the supervisor alone (a service manager's stop): both workers finish."""
    topic = new_topic("cli")
    events = make_events(2000, users=100, pins=80, now_ms=int(time.time() * 1000), seed=9, seq_len=SEQ_LEN)  # fmt: skip
    feast_store("redis")  # applies the repo to this test's project
    state = open_state_store(feast_store("redis"), NAMESPACE, HALF_LIFE_S * 1000)
    proc, log = cli(tmp_path, "term", bootstrap, topic, project), tmp_path / "term.log"
    try:
        workers = workers_of(proc, log)
        assert len(workers) == 2
        produce(topic, [e.encode(CODEC) for e in events])
        wait_for(lambda: applied(state, topic) >= len(events), 90, log.read_text()[-3000:])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        proc.kill()
    out = log.read_text()
    assert "[worker 1] stream worker stopped" in out and "[worker 2] stream worker stopped" in out
    assert not any(w.is_running() for w in workers)
    assert_online_matches(feast_store("redis"), reference(events, SEQ_LEN, HALF_LIFE_S * 1000))
    state.close()


@pytest.mark.kafka
@pytest.mark.redis
def test_cli_a_dead_worker_stops_the_others_and_is_named(
    tmp_path, feast_store, new_topic, bootstrap, project, redis_client
) -> None:
    topic = new_topic("cli")
    feast_store("redis")
    proc, log = cli(tmp_path, "dead", bootstrap, topic, project), tmp_path / "dead.log"
    try:
        workers = workers_of(proc, log)
        victim = workers[1]
        victim.send_signal(signal.SIGKILL)
        assert proc.wait(60) == 1, log.read_text()[-3000:]
    finally:
        proc.kill()
    last = log.read_text().strip().splitlines()[-1]
    named = rf"stream worker \d of 2 \(pid {victim.pid}\) was killed by SIGKILL; the other workers were stopped$"  # fmt: skip
    assert re.search(named, last), last
    assert not any(w.is_running() for w in workers)
