"""The same serving path on the Redis online store (127.0.0.1:6379, a private project)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import feast
import numpy as np
import pyarrow.dataset as ds
import pytest
import redis

from batch.profiles import load_profiles
from schemas.arrow import USER_HISTORY_STATE
from serving.config import ServeConfig
from tests.serving.conftest import END, World, running_server, wait_ready, write_realtime
from tests.serving.test_serving import offline_embedding, post
from towerline.core.featurestore import apply_repo, open_store, write_online

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_store(served_world: World, tmp_path: Path) -> Iterator[feast.FeatureStore]:
    project = f"srv_r_{uuid.uuid4().hex[:8]}"
    store = open_store(online="redis", redis_url="127.0.0.1:6379", project=project, data_dir=tmp_path / "feast")  # fmt: skip
    apply_repo(store, lake=served_world.lake)
    load_profiles(store, served_world.lake, progress=False)
    states = ds.dataset(served_world.lake / "user_history_state" / f"dt={END.isoformat()}", schema=USER_HISTORY_STATE)  # fmt: skip
    write_online(store, "user_history_state", states.to_table())
    write_realtime(store)
    yield store
    client = redis.Redis(host="127.0.0.1", port=6379)
    for key in client.scan_iter(match=f"*{project}*".encode(), count=10_000):
        client.delete(key)


def test_redis_serves_the_offline_embedding_and_retrieves(served_world: World, redis_store, tmp_path: Path) -> None:  # fmt: skip
    indexes = Path(shutil.copytree(served_world.indexes, tmp_path / "indexes"))
    cfg = ServeConfig(indexes=indexes, registry=served_world.registry, poll_s=0.1)
    subject = served_world.pins[9]
    with running_server(cfg, redis_store) as url:
        assert wait_ready(url)["model_version"] == "v1"
        body = post(url, "/v1/user-embedding", {"user_id": 3, "subject_pin_id": subject}).json()
        assert (body["history"], body["context"]) == ("cached", "subject_pin")
        want = offline_embedding(served_world, "v1", 3, subject, list(range(100, 115)))
        np.testing.assert_allclose(body["embedding"], want, atol=1e-5)
        answer = post(url, "/v1/retrieve", {"user_id": 3, "subject_pin_id": subject, "k": 30}).json()  # fmt: skip
        assert answer["model_version"] == "v1" and len(answer["candidates"]) == 30
        cold = post(url, "/v1/retrieve", {"user_id": 55_555, "k": 5}).json()
        assert cold["history"] == "missing" and len(cold["candidates"]) == 5
