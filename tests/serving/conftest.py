"""A real published world for the serving tests: lake, registry (v1, v2), Feast online
store, encoded history states, corpus, HNSW indexes with pin interests, serving.json; and a
real uvicorn server on a free loopback port, queried with a real HTTP client."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import feast
import pyarrow as pa
import pytest
import requests

from batch.corpus import run_corpus
from batch.corpus_steps import CorpusConfig
from batch.encode_job import EncodeConfig, run_encode
from batch.index import run_index
from batch.profiles import load_profiles
from batch.publish import publish
from model.artifacts import TwoTower, save_model
from model.config import ModelConfig
from model.lake_io import read_pins
from serving.app import create_app
from serving.config import ServeConfig
from serving.server import server_thread
from tests.batch.conftest import TINY_MODEL
from towerline.core.ann import HnswParams
from towerline.core.featurestore import apply_repo, open_store, write_online
from towerline.world import WorldConfig, generate

END = dt.date(2025, 6, 30)
DIRECT = ["--runner=DirectRunner"]
REALTIME_USERS = (1, 2, 3)


@dataclass(frozen=True)
class World:
    lake: Path
    registry: Path
    indexes: Path
    feast_dir: Path
    project: str
    store: feast.FeatureStore
    pins: list[int]


@pytest.fixture(scope="session")
def served_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """v1 and v2 encoded and indexed; v1 published. Read-only for the tests."""
    root = tmp_path_factory.mktemp("served")
    lake, registry, indexes = root / "lake", root / "registry", root / "indexes"
    generate(
        WorldConfig(users=150, pins=300, days=4, seed=11, end_date=END, offsite_per_user=12.0),
        lake,
        progress=False,
    )
    pins = read_pins(lake)
    # With the request gap: the served embedding must then equal the offline one computed
    # from the state row's last_event_ts_ms (tests/serving/test_serving.py).
    cfg = ModelConfig.for_data(len(pins), pins.max_interest_id, **TINY_MODEL, request_gap=True)
    for seed in (1, 2):
        save_model(registry, TwoTower.build(cfg, seed=seed).eval(), {"seed": seed}, {})
    project = f"srv_{uuid.uuid4().hex[:8]}"
    store = open_store(online="sqlite", project=project, data_dir=root / "feast")
    apply_repo(store, lake=lake)
    load_profiles(store, lake, progress=False)
    for version in ("v1", "v2"):
        run_encode(
            EncodeConfig(lake=lake, day=END, registry=registry, version=version, progress=False),
            pipeline_args=DIRECT,
            store=store,
        )
    run_corpus(lake, CorpusConfig(day=END, half_life_days=7.0, top_m=10_000), out=root)
    params = HnswParams(M=8, ef_construction=100, ef_search=100)
    for version in ("v1", "v2"):
        run_index(root / "corpus", registry, version, indexes, params, calibrate=False, threads=1, pipeline_args=DIRECT)  # fmt: skip
    publish("v1", registry, indexes, lake, store)
    write_realtime(store)
    return World(lake, registry, indexes, root / "feast", project, store, pins.pin_id.tolist())


def write_realtime(store: feast.FeatureStore) -> None:
    """Real-time sequences of REALTIME_USERS, as the stream worker would write them."""
    now = dt.datetime.now(dt.UTC)
    rows = pa.table(
        {
            "user_id": list(REALTIME_USERS),
            "pin_ids": [[11, 12, 13], [21], list(range(100, 115))],
            "event_ts_ms": [[1, 2, 3], [1], list(range(15))],
            "actions": [["CLICK"] * 3, ["SAVE"], ["CLOSEUP"] * 15],
            "updated_ts_ms": [int(now.timestamp() * 1000)] * 3,
            "event_timestamp": [now] * 3,
        }
    )
    write_online(store, "user_realtime_seq", rows)


@contextlib.contextmanager
def running_server(cfg: ServeConfig, store: feast.FeatureStore) -> Iterator[str]:
    """A real uvicorn server on a free loopback port; yields its base URL."""
    with server_thread(create_app(cfg, store)) as url:
        yield url


def wait_ready(url: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = requests.get(f"{url}/readyz", timeout=5)
        if answer.status_code == 200:
            return answer.json()
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout_s}s: {answer.json()}")
