"""Serving a sharded index set over real HTTP: all shards loaded and queried, answers merged
by score equal brute force over the whole corpus, rules and the version rule kept, and a
set that is not whole refused while the old version keeps serving."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import torch

from batch.corpus import CORPUS_FILE, resolve_snapshot
from batch.index import item_inputs
from batch.index_shards import run_sharded_index
from batch.publish import publish
from model.artifacts import load_item_tower
from serving.config import ServeConfig
from tests.serving.conftest import DIRECT, REALTIME_USERS, World, running_server, wait_ready
from towerline.core.ann import SERVING, HnswParams, model_root
from towerline.core.ann.interests import PinInterests

PARAMS = HnswParams(M=8, ef_construction=100, ef_search=200)  # ef >= shard size: exhaustive


@pytest.fixture
def indexes(served_world: World, tmp_path: Path) -> Path:
    """A private store copy with a 3-shard set of v1 published (v1 already served)."""
    store = Path(shutil.copytree(served_world.indexes, tmp_path / "indexes"))
    corpus = served_world.indexes.parent / "corpus"
    run_sharded_index(corpus, served_world.registry, "v1", store, PARAMS, calibrate=False, threads=1, pipeline_args=DIRECT, shards=3)  # fmt: skip
    return store


def corpus_vectors(world: World, version: str) -> tuple[np.ndarray, np.ndarray]:
    """Every corpus pin (N,) and its item embedding (N, dim) under ``version``."""
    snapshot, _ = resolve_snapshot(world.indexes.parent / "corpus")
    ids, interests, conf = item_inputs(pq.read_table(snapshot / CORPUS_FILE))
    with torch.inference_mode():
        tower = load_item_tower(world.registry, version)
        return ids, tower(*(torch.from_numpy(a) for a in (ids, interests, conf))).numpy()


def post(url: str, path: str, body: dict) -> dict:
    answer = requests.post(f"{url}{path}", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_published_set_is_served_merged_by_score(served_world: World, indexes: Path) -> None:
    doc = publish("v1", served_world.registry, indexes, served_world.lake, served_world.store)
    assert len(doc["shards"]) == 3
    ids, vectors = corpus_vectors(served_world, "v1")
    cfg = ServeConfig(indexes=indexes, registry=served_world.registry, poll_s=0.1)
    with running_server(cfg, served_world.store) as url:
        ready = wait_ready(url)
        assert (ready["model_version"], ready["index_dir"]) == ("v1", doc["dir"])
        assert ready["index_shards"] == 3
        for user in (REALTIME_USERS[2], 40):
            subject = served_world.pins[user]
            body = post(url, "/v1/retrieve", {"user_id": user, "subject_pin_id": subject, "k": 30})
            assert body["model_version"] == "v1"  # the set's version, the tower's version
            embedding = post(url, "/v1/user-embedding", {"user_id": user, "subject_pin_id": subject})  # fmt: skip
            assert embedding["model_version"] == "v1"
            scores = vectors @ np.asarray(embedding["embedding"], np.float32)
            seen = set(range(100, 115)) if user == REALTIME_USERS[2] else set()
            order = [int(ids[i]) for i in np.argsort(-scores, kind="stable") if int(ids[i]) not in seen]  # fmt: skip
            got = [c["pin_id"] for c in body["candidates"]]
            assert got == order[:30]  # brute force over all shards, seen pins excluded
            assert not set(got) & seen
            score_of = dict(zip(ids.tolist(), scores.tolist(), strict=True))
            np.testing.assert_allclose([c["score"] for c in body["candidates"]], [score_of[p] for p in got], atol=1e-5)  # fmt: skip
        # Interest rules look pins up across all shards' interests.
        merged = [PinInterests.load(model_root(indexes, "two_tower") / s["dir"]) for s in doc["shards"]]  # fmt: skip
        lookup = PinInterests.build(np.concatenate([p.pin_id for p in merged]), np.concatenate([p.interest_ids for p in merged]))  # fmt: skip
        counts = np.bincount(lookup.interest_ids[lookup.interest_ids >= 0])
        common = int(np.argmax(counts))
        body = post(url, "/v1/retrieve", {"user_id": 7, "k": 10, "interests": [common]})
        got = np.array([c["pin_id"] for c in body["candidates"]])
        assert len(got) == min(10, counts[common])
        assert all(common in row for row in lookup.lookup(got))


def test_a_set_that_is_not_whole_is_refused_and_the_old_version_serves(served_world: World, indexes: Path) -> None:  # fmt: skip
    root = model_root(indexes, "two_tower")
    v1 = json.loads((root / SERVING).read_text())  # the plain v1 build serves
    doc = publish("v1", served_world.registry, indexes, served_world.lake, served_world.store)
    set_pointer = (root / SERVING).read_text()
    (root / SERVING).write_text(json.dumps(v1))
    cfg = ServeConfig(indexes=indexes, registry=served_world.registry, poll_s=0.1)
    with running_server(cfg, served_world.store) as url:
        ready = wait_ready(url)
        assert (ready["index_dir"], ready["index_shards"]) == (v1["dir"], 1)
        # serving.json naming only 2 of the 3 shards: refused, v1's plain build keeps serving.
        partial = json.loads(set_pointer)
        partial["shards"] = partial["shards"][:2]
        (root / SERVING).write_text(json.dumps(partial))
        refused_once(url, 1)
        assert requests.get(f"{url}/readyz", timeout=5).json()["index_dir"] == v1["dir"]
        # A shard whose file is not the one published: refused too.
        shard2 = root / doc["shards"][2]["dir"] / "index.bin"
        original = shard2.read_bytes()
        shard2.write_bytes(
            original[:100] + bytes(b ^ 0xFF for b in original[100:116]) + original[116:]
        )
        (root / SERVING).write_text(set_pointer)
        refused_once(url, 2)
        shard2.write_bytes(original)
        (root / SERVING).write_text(json.dumps({**json.loads(set_pointer), "published_at": "again"}))  # fmt: skip
        deadline = time.monotonic() + 20
        while requests.get(f"{url}/readyz", timeout=5).json()["index_dir"] != doc["dir"]:
            assert time.monotonic() < deadline, "the whole set never went live"
            time.sleep(0.05)
        body = post(url, "/v1/retrieve", {"user_id": 1, "k": 5})
        assert body["model_version"] == "v1" and len(body["candidates"]) == 5


def refused_once(url: str, times: int) -> None:
    deadline = time.monotonic() + 20
    want = f"towerline_serving_versions_refused_total {float(times)}"
    while want not in requests.get(f"{url}/metrics", timeout=5).text:
        assert time.monotonic() < deadline, f"refusal {times} never came"
        time.sleep(0.05)
