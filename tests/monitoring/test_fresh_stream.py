"""Stream lag from outside the worker, with the real broker, worker and online store: a
running worker stays within target, a stopped one shows event-time lag that keeps growing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid

import pytest
from kafka import KafkaProducer

from monitoring.collect import Sources, collect
from monitoring.model import (
    BREACH,
    DATA_AGE,
    LAG_EVENT_TIME,
    LAG_OFFSETS,
    OK,
    PIPELINE_FRESHNESS_P50,
)
from schemas.codec import AvroCodec
from streams.config import WorkerConfig
from streams.runner import run_worker_in_thread
from tests.streams.stream_kit import Ev

pytestmark = pytest.mark.kafka
CODEC = AvroCodec()
NAMESPACE = "towerline:streams:montest"
USERS = 24


def _events(tag: str, n: int) -> list[tuple[bytes, bytes]]:
    now = int(time.time() * 1000)
    return [Ev(f"{tag}-{i}", i % USERS, 100 + i, "CLICK", now - 50 * i).encode(CODEC) for i in range(n)]  # fmt: skip


def _send_one_by_one(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """One record per batch, so even the dev broker reports exact end offsets."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value).get(timeout=10)
    finally:
        producer.close(timeout=5)


def _lags(snapshot, measure, view="user_realtime_seq"):
    return {m.partition: m.value for m in snapshot.measures if m.view == view and m.measure == measure}  # fmt: skip


def _status(snapshot, view, measure):
    [r] = [r for r in snapshot.slos if r.view == view and r.measure == measure]
    return r.status


def test_stopped_worker_lag_grows_running_worker_holds(feast_store, bootstrap, new_topic, fast_group) -> None:  # fmt: skip
    store = feast_store("sqlite")
    topic = new_topic("mon")
    cfg = WorkerConfig(
        group_id=f"g-{uuid.uuid4().hex[:8]}", bootstrap=bootstrap, topic=topic,
        state_namespace=NAMESPACE, max_poll_records=300, poll_timeout_ms=50, metrics_port=0,
        **fast_group,
    )  # fmt: skip
    sources = Sources(store=store, bootstrap=bootstrap, topic=topic, group=cfg.group_id, state_namespace=NAMESPACE)  # fmt: skip
    with run_worker_in_thread(cfg, store) as worker:
        assert worker.wait_assigned(60) is not None
        first = _events("a", 40)
        _send_one_by_one(bootstrap, topic, first)
        assert worker.wait_applied(len(first), 60), worker.stats
        with_metrics = dataclasses.replace(sources, stream_metrics=(f"127.0.0.1:{worker.metrics_port}",))  # fmt: skip
        running = collect(with_metrics)
    assert running.unreachable == ()
    lag = _lags(running, LAG_EVENT_TIME)
    assert set(lag) == {"0", "1", "2", "3"} and all(v is not None and v < 60 for v in lag.values())
    assert _status(running, "user_realtime_seq", LAG_EVENT_TIME) == OK
    assert all(v == 0 for v in _lags(running, LAG_OFFSETS).values()), _lags(running, LAG_OFFSETS)
    assert _lags(running, DATA_AGE)[""] < 60
    [fresh] = [m for m in running.measures if m.view == "pin_engagement" and m.measure == PIPELINE_FRESHNESS_P50]  # fmt: skip
    assert fresh.value is not None and fresh.sample == len(first)  # the worker's histogram
    # The worker is stopped; events keep arriving.
    _send_one_by_one(bootstrap, topic, _events("b", 8))
    stopped = collect(sources)
    time.sleep(2.0)
    later = collect(sources)
    assert sum(_lags(stopped, LAG_OFFSETS).values()) == 8  # unapplied records, by offsets
    before, after = _lags(stopped, LAG_EVENT_TIME), _lags(later, LAG_EVENT_TIME)
    assert all(after[p] - before[p] >= 1.5 for p in before), (before, after)
    two_minutes = collect(sources, clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2))
    assert all(v > 60 for v in _lags(two_minutes, LAG_EVENT_TIME).values())
    assert _status(two_minutes, "user_realtime_seq", LAG_EVENT_TIME) == BREACH
    assert _status(two_minutes, "pin_engagement", LAG_EVENT_TIME) == BREACH
