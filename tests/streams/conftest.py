"""Fixtures of the stream tests: real Feast stores (SQLite, Redis) and worker configs."""

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import feast
import pytest
import redis
from stream_kit import NAMESPACE, REDIS_URL

from streams.config import WorkerConfig
from towerline.core.featurestore import apply_repo, open_store


@pytest.fixture
def project() -> str:
    return f"tl_stream_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_client(project: str) -> Iterator[redis.Redis]:
    """Redis on 127.0.0.1:6379; its absence FAILS the test. Our keys are deleted after."""
    host, port = REDIS_URL.split(":")
    client = redis.Redis(host=host, port=int(port), socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis on {REDIS_URL} is required for this test: {exc}")
    yield client
    for pattern in (f"*{project}", f"{NAMESPACE}:{project}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def online(request: pytest.FixtureRequest) -> str:
    """Run the test against each online store."""
    if request.param == "redis":
        request.getfixturevalue("redis_client")  # fail loudly without Redis; clean up after
    return request.param


@pytest.fixture
def feast_store(tmp_path: Path, project: str) -> Callable[[str], feast.FeatureStore]:
    """``feast_store(online)``: an applied store of this test's project (a new object per call)."""

    def make(kind: str) -> feast.FeatureStore:
        store = open_store(
            online=kind, redis_url=REDIS_URL, project=project, data_dir=tmp_path / "feast"
        )
        apply_repo(store)
        return store

    return make


@pytest.fixture
def worker_cfg(bootstrap: str, fast_group: dict) -> Callable[..., WorkerConfig]:
    """``worker_cfg(topic, group=..., **overrides)``: small batches, short group timeouts."""

    def make(topic: str, group: str | None = None, **overrides) -> WorkerConfig:
        base = dict(
            group_id=group or f"g-{uuid.uuid4().hex[:8]}",
            bootstrap=bootstrap,
            topic=topic,
            state_namespace=NAMESPACE,
            max_poll_records=300,
            poll_timeout_ms=50,
            **fast_group,
        )
        return WorkerConfig(**{**base, **overrides})

    return make
