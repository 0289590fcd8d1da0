"""Redis going away under a running worker: back off, say where, count it, and recover.

A private ``redis-server`` (AOF on, fsync always) is stopped and restarted on the same
port while events flow; the shared Redis of the other tests is never touched.
"""

import logging
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from kafka import KafkaProducer
from stream_kit import Ev, assert_online_matches, reference

from schemas.codec import AvroCodec
from streams.runner import run_worker_in_thread
from towerline.core.featurestore import apply_repo, open_store

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
CODEC, SEQ_LEN, HALF_LIFE_S = AvroCodec(), 8, 6 * 3600.0


class PrivateRedis:
    """One redis-server process on a free loopback port, restartable with its data."""

    def __init__(self, data_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is required for this test (apt install redis-server)")
        self.binary, self.dir = binary, data_dir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def send(bootstrap: str, topic: str, evs: list[Ev]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for f in [producer.send(topic, key=k, value=v) for k, v in (e.encode(CODEC) for e in evs)]:
        f.get(10)
    producer.close(5)


def make(n: int, start: int) -> list[Ev]:
    now = int(time.time() * 1000)
    return [Ev(f"o{i}", i % 9, i % 5, "SAVE", now - i) for i in range(start, start + n)]


def test_a_redis_outage_backs_off_names_the_address_counts_and_recovers(
    tmp_path, private_redis, worker_cfg, new_topic, bootstrap, project, caplog
) -> None:
    address = f"127.0.0.1:{private_redis.port}"
    open_feast = lambda: open_store(online="redis", redis_url=address, project=project, data_dir=tmp_path / "feast")  # noqa: E731  # fmt: skip
    store = open_feast()
    apply_repo(store)
    topic, before, during = new_topic("eng"), make(60, 0), make(60, 60)
    cfg = worker_cfg(topic, seq_len=SEQ_LEN, half_life_s=HALF_LIFE_S, metrics_port=0, retry_backoff_max_s=1.0)  # fmt: skip
    caplog.set_level(logging.INFO, logger="streams.worker")
    with run_worker_in_thread(cfg, store) as worker:
        send(bootstrap, topic, before)
        assert worker.wait_applied(len(before), timeout_s=60), worker.stats
        private_redis.stop()
        send(bootstrap, topic, during)
        metrics = worker.worker.metrics
        deadline = time.monotonic() + 30
        while metrics.store_unavailable.get() < 5:
            assert time.monotonic() < deadline and worker.thread.is_alive(), worker.errors
            time.sleep(0.1)
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics").read().decode()  # fmt: skip
        assert "towerline_stream_state_store_up 0.0" in scraped
        assert re.search(r"towerline_stream_state_store_unavailable_total [5-9]", scraped), scraped
        private_redis.start()
        assert worker.wait_applied(len(before) + len(during), timeout_s=30), worker.stats
        assert metrics.store_up.get() == 1 and not worker.errors
    warned = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert all(f"redis {address}" in m for m in warned), warned
    delays = [float(re.search(r"retrying in ([\d.]+)s", m).group(1)) for m in warned if "retrying" in m]  # fmt: skip
    assert delays[:4] == sorted(delays[:4]) and delays[0] < delays[3] <= 1.0, delays  # grows
    assert any(f"state store at redis {address} answers again" in r.getMessage() for r in caplog.records)  # fmt: skip
    every = before + during
    assert_online_matches(open_feast(), reference(every, SEQ_LEN, HALF_LIFE_S * 1000))
