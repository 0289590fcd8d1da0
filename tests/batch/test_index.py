"""The ANN index class (real hnswlib) and the index job (DirectRunner, real registry/files)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from batch.corpus import CORPUS_FILE, run_corpus
from batch.corpus_steps import CorpusConfig
from batch.index import EmbedCorpus, item_inputs, run_index
from model.artifacts import TwoTower, load_item_tower, save_model
from model.config import ModelConfig
from model.lake_io import read_pins
from tests.cli.cli_kit import assert_user_error, towerline_here
from towerline.core.ann import (
    INDEX_FILE,
    SERVING,
    AnnError,
    HnswIndex,
    HnswParams,
    IndexIntegrityError,
    current_dir,
    list_indexes,
    new_staging,
    prune,
    publish_index,
    read_pointer,
    rollback,
)
from towerline.core.ann.interests import INTERESTS_FILE
from towerline.core.errors import InputError
from towerline.core.files import write_json_atomic
from towerline.world import WorldConfig, generate

DAY = dt.date(2025, 6, 30)
T0 = dt.datetime(2025, 7, 1, 3, tzinfo=dt.UTC)
DESIGN_KEYS = {"model_name", "model_version", "dim", "metric", "built_at", "corpus_snapshot"}
DESIGN_KEYS |= {"num_items", "hnsw", "sha256"}


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int = 32) -> np.ndarray:
    """(n, dim) float32 unit vectors around ``clusters`` directions (like item embeddings)."""
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at(found: np.ndarray, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int):
    exact = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :k]]
    return np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, exact, strict=True)]) / k


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A generated lake, its corpus snapshot (a few thousand pins) and a one-version registry."""
    root = tmp_path_factory.mktemp("index")
    lake = root / "lake"
    generate(
        WorldConfig(users=2000, pins=4000, days=20, seed=5, end_date=DAY), lake, progress=False
    )
    snapshot = Path(run_corpus(lake, CorpusConfig(DAY, 7.0, shards=4))["path"])
    cfg = ModelConfig.for_data(4000, 70, dim=32, head_hidden=64)
    save_model(root / "registry", TwoTower.build(cfg, seed=1), {"start": "x"}, {})
    return {"lake": lake, "snapshot": snapshot, "registry": root / "registry", "root": root}


def test_hnsw_index_recall_save_load_and_metadata(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = rng.choice(10**9, 3000, replace=False).astype(np.int64)  # pin ids are the labels
    vectors, queries = clustered(rng, 3000, 32), clustered(rng, 50, 32)
    index = HnswIndex.build(ids, vectors, HnswParams(M=16, ef_construction=100), 2, {"x": 1})
    found, scores = index.query(queries, k=100)
    assert found.shape == (50, 100) and found.dtype == np.int64
    assert recall_at(found, ids, vectors, queries, 100) >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    row_of = {int(pin): row for row, pin in enumerate(ids)}
    best = vectors[[row_of[int(pin)] for pin in found[:, 0]]]
    np.testing.assert_allclose(scores[:, 0], np.einsum("ij,ij->i", queries, best), atol=1e-5)

    meta = index.save(tmp_path / "ix")
    assert meta["x"] == 1 and meta["dim"] == 32 and meta["metric"] == "ip"
    assert (
        meta["num_items"] == 3000 and meta["hnsw"]["M"] == 16 and len(meta["sha256"]["index"]) == 64
    )
    loaded = HnswIndex.load(tmp_path / "ix")
    assert np.array_equal(loaded.query(queries, k=100)[0], found)
    one_ids, _ = loaded.query(queries[0], k=5000)  # (dim,) query; k clamps to the size
    assert one_ids.shape == (1, 3000)


def test_load_refuses_a_modified_index_and_build_refuses_bad_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = clustered(rng, 200, 8)
    HnswIndex.build(np.arange(200), vectors).save(tmp_path / "ix")
    raw = bytearray((tmp_path / "ix" / INDEX_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "ix" / INDEX_FILE).write_bytes(bytes(raw))
    with pytest.raises(IndexIntegrityError, match="does not match its sha256"):
        HnswIndex.load(tmp_path / "ix")
    with pytest.raises(AnnError, match="unique"):
        HnswIndex.build(np.zeros(200, np.int64), vectors)
    vectors[3, 0] = np.nan
    with pytest.raises(AnnError, match="NaN"):
        HnswIndex.build(np.arange(200), vectors)


def test_embed_corpus_matches_the_item_tower_on_training_inputs(world: dict[str, Path]) -> None:
    """EmbedCorpus on TestPipeline == ItemTower fed the way training feeds it (read_pins)."""
    corpus = pq.read_table(world["snapshot"] / CORPUS_FILE)
    tower = load_item_tower(world["registry"], "v1")
    pins = read_pins(world["lake"])
    ids = np.sort(corpus["pin_id"].to_numpy())
    rows, _ = pins.index_of(ids)
    with torch.inference_mode():
        args = (ids, pins.interest_ids[rows], pins.interest_conf[rows])
        want = tower(*(torch.from_numpy(a) for a in args)).numpy()
    assert np.array_equal(item_inputs(corpus)[1][np.argsort(corpus["pin_id"].to_numpy())], args[1])

    def check(elements: list) -> None:
        assert len(elements) == 1
        got_ids, got = elements[0]
        assert np.array_equal(got_ids, ids)
        np.testing.assert_allclose(got, want, atol=1e-6)

    with BeamTestPipeline() as p:
        batches = p | beam.Create([corpus.slice(0, 1000), corpus.slice(1000)])
        assert_that(batches | EmbedCorpus(world["registry"], "v1"), check)


def test_run_index_publishes_an_index_with_recall(world: dict[str, Path]) -> None:
    out = world["root"] / "indexes-e2e"
    meta = run_index(world["snapshot"], world["registry"], "v1", out, threads=2, now=T0)
    path = Path(meta["path"])
    assert path == out / "two_tower" / "v1-20250701T030000Z"
    assert sorted(p.name for p in path.iterdir()) == ["index.bin", "metadata.json", INTERESTS_FILE]
    on_disk = json.loads((path / "metadata.json").read_text())
    assert set(on_disk) >= DESIGN_KEYS and on_disk["corpus_snapshot"] == world["snapshot"].name
    manifest = json.loads((world["registry"] / "two_tower" / "v1" / "manifest.json").read_text())
    assert on_disk["sha256"]["item_tower"] == manifest["files"]["item_tower.pt"]
    assert on_disk["calibration"]["recall_at_k"] >= 0.95
    assert read_pointer(out / "two_tower" / "current")["dir"] == path.name

    corpus = pq.read_table(world["snapshot"] / CORPUS_FILE)
    assert on_disk["num_items"] == corpus.num_rows > 2000
    ids, interests, conf = item_inputs(corpus)
    with torch.inference_mode():
        tower = load_item_tower(world["registry"], "v1")
        vectors = tower(*(torch.from_numpy(a) for a in (ids, interests, conf))).numpy()
    index = HnswIndex.load(path)
    queries = vectors[np.random.default_rng(2).choice(len(ids), 100, replace=False)]
    assert recall_at(index.query(queries, 100)[0], ids, vectors, queries, 100) >= 0.95


def _stage(indexes: Path, version: str, built: dt.datetime) -> Path:
    staging = new_staging(indexes, "two_tower")
    meta = {"model_name": "two_tower", "model_version": version, "built_at": built.isoformat()}
    meta |= {"corpus_snapshot": "c", "sha256": {"item_tower": "t"}}
    vectors = clustered(np.random.default_rng(3), 50, 8)
    HnswIndex.build(np.arange(50), vectors, metadata=meta).save(staging)
    return staging


def test_keep_last_n_and_rollback(tmp_path: Path) -> None:
    times = [T0 + dt.timedelta(hours=h) for h in range(4)]
    for i, t in enumerate(times):
        publish_index(_stage(tmp_path, f"v{i + 1}", t), tmp_path, "two_tower", 3, t)
    names = [p.name for p, _ in list_indexes(tmp_path, "two_tower")]
    assert names == ["v2-20250701T040000Z", "v3-20250701T050000Z", "v4-20250701T060000Z"]
    assert current_dir(tmp_path, "two_tower").name == names[2]
    assert not list((tmp_path / "two_tower").glob(".staging-*"))

    # A damaged older build is skipped: rollback from v4 lands on v2.
    (tmp_path / "two_tower" / names[1] / INDEX_FILE).write_bytes(b"garbage")
    assert rollback(tmp_path, "two_tower", T0)["dir"] == names[0]
    with pytest.raises(AnnError, match="no intact index older than v2"):
        rollback(tmp_path, "two_tower", T0)
    assert current_dir(tmp_path, "two_tower").name == names[0]  # a refusal flips nothing

    # The build serving.json names survives pruning even when it is the oldest.
    write_json_atomic(tmp_path / "two_tower" / SERVING, {"dir": names[0]})
    later = T0 + dt.timedelta(days=1)
    publish_index(_stage(tmp_path, "v5", later), tmp_path, "two_tower", 1, later)
    kept = {p.name for p, _ in list_indexes(tmp_path, "two_tower")}
    assert kept == {names[0], "v5-20250702T030000Z"}


def test_cli_index_and_rollback(world: dict[str, Path], tmp_path: Path) -> None:
    args = ["batch", "index", "--corpus", str(world["snapshot"].parent)]
    args += ["--registry", str(world["registry"]), "--indexes", str(tmp_path)]
    args += ["--ef-search", "120", "--", "--runner=DirectRunner"]
    result = towerline_here(*args)
    assert result.code == 0, str(result)
    meta = json.loads(result.stdout.strip().splitlines()[-1])
    assert meta["hnsw"]["ef_search"] == 120 and meta["model_version"] == "v1"
    result = towerline_here("index", "rollback", "--indexes", str(tmp_path))
    assert_user_error(result, 1, "cannot roll back")
    result = towerline_here(
        "batch", "index", "--corpus", str(tmp_path), "--registry", "x", "--indexes", "y"
    )
    assert_user_error(result, 2, "not a corpus snapshot")


def test_pruning_keeps_what_serving_json_and_its_previous_name(tmp_path: Path) -> None:
    times = [T0 + dt.timedelta(hours=h) for h in range(4)]
    names = [
        publish_index(_stage(tmp_path, f"v{i + 1}", t), tmp_path, "two_tower", 4, t).name
        for i, t in enumerate(times)
    ]
    serving = {"dir": names[1], "previous": {"model_version": "v1", "dir": names[0]}}
    write_json_atomic(tmp_path / "two_tower" / SERVING, serving)
    later = T0 + dt.timedelta(days=1)
    publish_index(_stage(tmp_path, "v5", later), tmp_path, "two_tower", 1, later)
    kept = [p.name for p, _ in list_indexes(tmp_path, "two_tower")]
    assert kept == [names[0], names[1], "v5-20250702T030000Z"]


def test_a_broken_serving_pointer_stops_pruning(tmp_path: Path) -> None:
    for h in range(2):
        t = T0 + dt.timedelta(hours=h)
        publish_index(_stage(tmp_path, f"v{h + 1}", t), tmp_path, "two_tower", 3, t)
    (tmp_path / "two_tower" / SERVING).write_text('{"dir": ')
    with pytest.raises(AnnError, match="serving.json is not valid JSON"):
        prune(tmp_path, "two_tower", 1)
    assert len(list_indexes(tmp_path, "two_tower")) == 2


@pytest.mark.parametrize("name", ["../../x", "a/../b", ".."])
def test_index_store_refuses_model_names_that_are_paths(tmp_path: Path, name: str) -> None:
    store = tmp_path / "indexes"
    for call in (
        lambda: new_staging(store, name),
        lambda: prune(store, name, 1),
        lambda: rollback(store, name, T0),
        lambda: list_indexes(store, name),
    ):
        with pytest.raises(InputError, match="not a plain name"):
            call()
    assert not any(tmp_path.rglob("*"))
