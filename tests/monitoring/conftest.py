"""Fixtures of the freshness monitor's tests: real Feast stores with a project of their own."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import feast
import pytest
import redis

from towerline.core.featurestore import apply_repo, open_store

REDIS_URL = "127.0.0.1:6379"


@pytest.fixture
def project() -> str:
    return f"tl_mon_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_client(project: str) -> Iterator[redis.Redis]:
    """Redis on 127.0.0.1:6379 (its absence FAILS the test); this test's keys deleted after."""
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis on {REDIS_URL} is required for this test: {exc}")
    yield client
    for pattern in (f"*{project}", f"*:{project}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()


@pytest.fixture
def feast_store(tmp_path: Path, project: str) -> Callable[[str], feast.FeatureStore]:
    """``feast_store("sqlite" | "redis")``: an applied store of this test's project."""

    def make(kind: str) -> feast.FeatureStore:
        store = open_store(online=kind, redis_url=REDIS_URL, project=project, data_dir=tmp_path / "feast")  # fmt: skip
        apply_repo(store)
        return store

    return make
