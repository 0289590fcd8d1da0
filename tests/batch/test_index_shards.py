"""`batch index --shards S` on the DirectRunner with a real registry and hnswlib: S normal
builds of one set, merged recall against brute force and one index, and publish refusing
an incomplete or mixed set."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from batch.corpus import CORPUS_FILE, run_corpus
from batch.corpus_steps import CorpusConfig
from batch.index import find_build, item_inputs, run_index, version_facts
from batch.index_shards import run_sharded_index
from batch.publish import PublishError, publish
from model.artifacts import TwoTower, load_item_tower, save_model
from model.config import ModelConfig
from tests.batch.test_publish import write_states
from tests.cli.cli_kit import assert_user_error, towerline_here
from towerline.core.ann import (
    SERVING,
    HnswIndex,
    HnswParams,
    ShardedIndex,
    read_metadata,
    read_pointer,
    shard_of,
)
from towerline.core.ann.interests import PinInterests
from towerline.core.files import write_json_atomic
from towerline.world import WorldConfig, generate

DAY = dt.date(2025, 6, 30)
T0 = dt.datetime(2025, 7, 1, 3, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)
DIRECT = ["--runner=DirectRunner"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A generated lake, its corpus snapshot (~1,500 pins), a one-version registry, the
    tower's embedding of every corpus pin, and one set of 3 shards built at T0."""
    root = tmp_path_factory.mktemp("shards")
    lake = root / "lake"
    generate(WorldConfig(users=400, pins=1500, days=8, seed=7, end_date=DAY), lake, progress=False)
    snapshot = Path(run_corpus(lake, CorpusConfig(DAY, 7.0, shards=2))["path"])
    cfg = ModelConfig.for_data(1500, 70, dim=16, head_hidden=32)
    save_model(root / "registry", TwoTower.build(cfg, seed=1), {"start": "x"}, {})
    corpus = pq.read_table(snapshot / CORPUS_FILE)
    ids, interests, conf = item_inputs(corpus)
    with torch.inference_mode():
        tower = load_item_tower(root / "registry", "v1")
        vectors = tower(*(torch.from_numpy(a) for a in (ids, interests, conf))).numpy()
    indexes = root / "indexes"
    built = run_sharded_index(snapshot, root / "registry", "v1", indexes, threads=1, pipeline_args=DIRECT, now=T0, shards=3)  # fmt: skip
    return {"lake": lake, "snapshot": snapshot, "registry": root / "registry", "root": root,
            "ids": ids, "vectors": vectors, "indexes": indexes, "built": built}  # fmt: skip


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, exact, strict=True)]) / exact.shape[1])  # fmt: skip


def test_each_shard_is_a_normal_build_of_one_set(world: dict) -> None:
    built, ids = world["built"], world["ids"]
    paths = [Path(p) for p in built["paths"]]
    assert [p.name for p in paths] == [f"v1-20250701T030000Z-shard{i}of3" for i in range(3)]
    assert built["num_items"] == len(ids) > 1000
    set_id = f"v1-20250701T030000Z-{world['snapshot'].name}-x3"
    held = []
    for i, path in enumerate(paths):
        meta = read_metadata(path)
        assert meta["shard"] == {"index": i, "count": 3, "set": set_id, "set_items": len(ids)}
        assert (meta["model_version"], meta["corpus_snapshot"]) == ("v1", world["snapshot"].name)
        assert meta["built_at"] == T0.isoformat() and meta["calibration"]["recall_at_k"] >= 0.95
        index = HnswIndex.load(path)  # its own sha256 verifies
        pins = PinInterests.load(path).pin_id
        assert len(index) == meta["num_items"] == len(pins)
        assert np.all(shard_of(pins, 3) == i)  # each pin in the shard its id hashes to
        held.append(pins)
    assert np.array_equal(np.sort(np.concatenate(held)), np.sort(ids))  # every pin once
    current = read_pointer(world["indexes"] / "two_tower" / "current")
    assert current["shards"] == [p.name for p in paths]


def test_merged_shards_match_brute_force_and_one_index(world: dict, tmp_path: Path) -> None:
    ids, vectors = world["ids"], world["vectors"]
    queries = vectors[np.random.default_rng(4).choice(len(ids), 80, replace=False)]
    exact = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :100]]
    merged = ShardedIndex.load([Path(p) for p in world["built"]["paths"]])
    got, scores = merged.query(queries, 100)
    single = run_index(world["snapshot"], world["registry"], "v1", tmp_path, threads=1, pipeline_args=DIRECT, now=T0)  # fmt: skip
    one, _ = HnswIndex.load(Path(single["path"])).query(queries, 100)
    assert recall(got, exact) >= 0.95
    assert recall(got, exact) >= recall(one, exact) - 0.01
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    row_of = {int(p): r for r, p in enumerate(ids)}
    top = vectors[[row_of[int(p)] for p in got[:, 0]]]
    np.testing.assert_allclose(scores[:, 0], np.einsum("ij,ij->i", queries, top), atol=1e-5)


def test_the_daily_reuse_never_takes_a_shard_for_a_whole_build(world: dict) -> None:
    facts, _ = version_facts(world["registry"], "v1", "two_tower", world["snapshot"].name, T0)
    assert find_build(world["indexes"], facts, HnswParams()) is None


@pytest.fixture
def indexes(world: dict, tmp_path: Path) -> Path:
    """A private copy of the store holding the set, and the lake's states of v1."""
    write_states(tmp_path / "lake", "v1")
    return Path(shutil.copytree(world["indexes"], tmp_path / "indexes"))


def test_publish_names_every_shard_of_the_set(world: dict, indexes: Path, tmp_path: Path) -> None:
    doc = publish("v1", world["registry"], indexes, tmp_path / "lake", now=T1)
    names = [Path(p).name for p in world["built"]["paths"]]
    assert doc["dir"] == names[0] and doc["set"].endswith("-x3")
    assert [s["dir"] for s in doc["shards"]] == names
    for shard in doc["shards"]:
        assert shard["index_sha256"] == read_metadata(indexes / "two_tower" / shard["dir"])["sha256"]["index"]  # fmt: skip
    assert read_pointer(indexes / "two_tower" / SERVING) == doc


def _refused(world: dict, indexes: Path, lake: Path, match: str) -> None:
    before = (indexes / "two_tower" / SERVING).read_bytes()
    with pytest.raises(PublishError, match=match) as refusal:
        publish("v1", world["registry"], indexes, lake)
    assert "\n" not in str(refusal.value)  # one line
    assert (indexes / "two_tower" / SERVING).read_bytes() == before  # serving unchanged


def test_publish_refuses_an_incomplete_or_mixed_set(world: dict, indexes: Path, tmp_path: Path) -> None:  # fmt: skip
    lake = tmp_path / "lake"
    publish("v1", world["registry"], indexes, lake, now=T1)
    names = [Path(p).name for p in world["built"]["paths"]]
    shard1 = indexes / "two_tower" / names[1]
    saved = shard1.rename(tmp_path / "shard1")
    _refused(world, indexes, lake, r"v1-20250701T030000Z-.*-x3 is missing shard 1 of 3")
    saved.rename(shard1)
    meta = read_metadata(shard1)
    write_json_atomic(shard1 / "metadata.json", {**meta, "corpus_snapshot": "corpus-other"})
    _refused(world, indexes, lake, "mixes corpus_snapshot")
    write_json_atomic(shard1 / "metadata.json", {**meta, "model_version": "v2"})
    _refused(world, indexes, lake, "mixes model_version v1, v2")
    write_json_atomic(shard1 / "metadata.json", meta)
    (shard1 / "index.bin").write_bytes(b"garbage")
    _refused(world, indexes, lake, "does not match its sha256")


def test_cli_builds_a_set_with_shards(world: dict, tmp_path: Path) -> None:
    args = ["batch", "index", "--corpus", str(world["snapshot"]), "--registry", str(world["registry"])]  # fmt: skip
    args += ["--indexes", str(tmp_path), "--threads", "1"]
    ran = towerline_here(*args, "--shards", "2", "--", *DIRECT)
    assert ran.code == 0, str(ran)
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert [s["dir"][-9:] for s in result["shards"]] == ["shard0of2", "shard1of2"]
    assert result["num_items"] == len(world["ids"]) and result["shard"]["count"] == 2
    assert_user_error(towerline_here(*args, "--shards", "0"), 2, "--shards")
