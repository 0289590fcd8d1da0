"""The streaming half of `towerline demo`: replay one day through a stream worker, then
read the topic back with a fresh consumer group.

The day is replayed restamped (event time = send time, order kept), so the freshness the
worker reports is that of the pipeline, not the age of yesterday's events; and the replay
starts only once the worker holds its partitions, so pipeline latency does not include
the consumer-group join (about half the session timeout on the dev broker).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from schemas.codec import AvroCodec
from schemas.errors import SchemaError
from towerline.core.errors import TowerlineError

GROUP = "towerline-demo"
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


class DemoStreamError(TowerlineError):
    """The demo's stream worker did not start."""


def replay_and_consume(lake: Path, day: str, bootstrap: str, store) -> dict[str, Any]:
    """Replay ``day`` of engagements through a worker; counts, latency and freshness."""
    from streams.config import WorkerConfig
    from streams.runner import run_worker_in_thread
    from towerline.replay import replay_partition

    worker_cfg = WorkerConfig(
        group_id=GROUP,
        bootstrap=bootstrap,
        state_namespace=f"towerline:demo:{time.time_ns()}",
        **FAST_GROUP,
    )
    with run_worker_in_thread(worker_cfg, store) as worker:
        joined_s = wait_assigned(worker, timeout_s=60)
        result = replay_partition(
            lake, day, bootstrap, table="engagements", progress=False, restamp=True
        )
        caught_up = worker.wait_applied(result.sent, timeout_s=120)
        stream = {
            "caught_up": caught_up,
            "join_seconds": round(joined_s, 1),
            "applied": worker.stats.applied,
            "dead_lettered": worker.stats.dead_lettered,
            "pipeline_latency_ms": worker.pipeline_latency_ms(),
            "freshness_ms": worker.freshness_ms(),
            "state_namespace": worker_cfg.state_namespace,  # where the monitor reads its progress
            "group": worker_cfg.group_id,
        }
    actions, bad = consume_back(bootstrap, result.topic, expected=result.sent)
    return {
        "stream": stream,
        "dt": day,
        "sent": result.sent,
        "failed": result.failed,
        "errors": list(result.errors),
        "send_seconds": round(result.seconds, 2),
        "consumed": sum(actions.values()),
        "undecodable": bad,
        "by_action": dict(actions),
    }


def wait_assigned(worker, timeout_s: float) -> float:
    """Seconds until the worker holds partitions (its group join is done)."""
    joined = worker.wait_assigned(timeout_s)
    if joined is not None:
        return joined
    if not worker.thread.is_alive():
        raise DemoStreamError(f"the stream worker died on start: {worker.errors}")
    raise DemoStreamError(f"the stream worker got no partitions in {timeout_s:.0f}s")


def consume_back(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> tuple:
    """Read the topic from the start with a fresh consumer group until `expected` arrive."""
    from kafka import KafkaConsumer

    codec, actions, bad = AvroCodec(), Counter(), 0
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{GROUP}-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FAST_GROUP,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while sum(actions.values()) + bad < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for message in records:
                    try:
                        actions[codec.decode(message.value)[1]["action"]] += 1
                    except SchemaError:
                        bad += 1
        consumer.commit()
    finally:
        consumer.close()
    return actions, bad
