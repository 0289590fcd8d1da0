"""Sharding an index by pin id: the stable hash, the merge by score (exact and over real
hnswlib shards), set checks, and the store flipping, rolling back and pruning whole sets."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from towerline.core.ann import (
    SERVING,
    AnnError,
    HnswIndex,
    HnswParams,
    ShardedIndex,
    current_set,
    index_sets,
    list_indexes,
    merge_top_k,
    new_staging,
    prune,
    publish_index,
    publish_set,
    read_pointer,
    rollback,
    set_problems,
    shard_of,
)
from towerline.core.ann.sets import IndexSet, shard_facts
from towerline.core.files import write_json_atomic

T0 = dt.datetime(2025, 7, 1, 3, tzinfo=dt.UTC)
MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """The reference finaliser, in Python integers."""
    x &= MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int = 16) -> np.ndarray:
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_shard_of_is_splitmix64_and_the_same_in_every_process() -> None:
    ids = np.random.default_rng(0).integers(0, 2**62, 1000)
    want = [splitmix64(int(i)) % 5 for i in ids]
    assert shard_of(ids, 5).tolist() == want
    # Pinned values: a change of the hash would move pins between the shards of old builds.
    pinned = np.array([0, 1, 2, 3, 42, 10**9, 2**62, 123456789])
    assert shard_of(pinned, 4).tolist() == [0, 1, 2, 0, 2, 3, 1, 0]
    code = "import numpy as np; from towerline.core.ann import shard_of; print(shard_of(np.arange(20), 3).tolist())"  # fmt: skip
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == str(shard_of(np.arange(20), 3).tolist())
    counts = np.bincount(shard_of(np.arange(1, 100_001), 4), minlength=4)
    assert counts.min() > 24_000  # balanced: 25,000 each give or take
    assert shard_of(np.arange(10), 1).tolist() == [0] * 10
    with pytest.raises(AnnError, match="at least 1 shard"):
        shard_of(np.arange(3), 0)


def test_merging_exact_shard_answers_gives_the_exact_global_top_k() -> None:
    rng = np.random.default_rng(1)
    ids = rng.choice(10**6, 2000, replace=False).astype(np.int64)
    vectors, queries = clustered(rng, 2000, 16), clustered(rng, 30, 16)
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1)[:, :50]
    want_ids, want_scores = ids[order], np.take_along_axis(scores, order, 1)
    shard = shard_of(ids, 3)
    parts_ids, parts_scores = [], []
    for i in range(3):
        rows = np.flatnonzero(shard == i)
        top = np.argsort(-scores[:, rows], axis=1)[:, :50]  # each shard's exact top-50
        parts_ids.append(ids[rows][top])
        parts_scores.append(np.take_along_axis(scores[:, rows], top, 1))
    got_ids, got_scores = merge_top_k(parts_ids, parts_scores, 50)
    assert np.array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)
    short_ids, _ = merge_top_k([parts_ids[0][:, :2], parts_ids[1][:, :1]], [parts_scores[0][:, :2], parts_scores[1][:, :1]], 10)  # fmt: skip
    assert short_ids.shape == (30, 3)  # k' = what the shards had


def test_sharded_hnsw_query_matches_one_index_and_brute_force() -> None:
    rng = np.random.default_rng(2)
    ids = rng.choice(10**9, 6000, replace=False).astype(np.int64)
    vectors, queries = clustered(rng, 6000, 16), clustered(rng, 40, 16)
    params = HnswParams(M=16, ef_construction=200, ef_search=200)
    shard = shard_of(ids, 3)
    shards = [HnswIndex.build(ids[shard == i], vectors[shard == i], params, 2) for i in range(3)]
    merged = ShardedIndex(shards, {"model_version": "v1"})
    assert len(merged) == 6000 and merged.dim == 16
    got, scores = merged.query(queries, 100)
    exact = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :100]]
    single, _ = HnswIndex.build(ids, vectors, params, 2).query(queries, 100)

    def recall(found: np.ndarray) -> float:
        return np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, exact, strict=True)]) / 100  # fmt: skip

    assert recall(got) >= 0.97 and recall(got) >= recall(single) - 0.01
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first across shards
    row_of = {int(p): r for r, p in enumerate(ids)}
    best = vectors[[row_of[int(p)] for p in got[:, 0]]]
    np.testing.assert_allclose(scores[:, 0], np.einsum("ij,ij->i", queries, best), atol=1e-5)
    one, _ = merged.query(queries[0], 5)  # (dim,) query
    assert one.shape == (1, 5)


def _stage_set(indexes: Path, version: str, built: dt.datetime, count: int = 3, snapshot: str = "c1") -> list[Path]:  # fmt: skip
    """Staged shards of one set of ``version`` (50 pins split by shard_of)."""
    facts = {"model_name": "two_tower", "model_version": version, "built_at": built.isoformat()}
    facts |= {"corpus_snapshot": snapshot, "sha256": {"item_tower": "t"}}
    ids = np.arange(1, 51)
    vectors = clustered(np.random.default_rng(3), 50, 8)
    shard = shard_of(ids, count)
    out = []
    for i in range(count):
        staging = new_staging(indexes, "two_tower")
        meta = shard_facts(facts, i, count, set_items=50)
        HnswIndex.build(ids[shard == i], vectors[shard == i], metadata=meta).save(staging)
        out.append(staging)
    return out


def _stage(indexes: Path, version: str, built: dt.datetime) -> Path:
    staging = new_staging(indexes, "two_tower")
    meta = {"model_name": "two_tower", "model_version": version, "built_at": built.isoformat()}
    meta |= {"corpus_snapshot": "c1", "sha256": {"item_tower": "t"}}
    HnswIndex.build(np.arange(50), clustered(np.random.default_rng(3), 50, 8), metadata=meta).save(staging)  # fmt: skip
    return staging


def test_a_set_is_flipped_rolled_back_and_pruned_whole(tmp_path: Path) -> None:
    t1, t2, t3 = (T0 + dt.timedelta(hours=h) for h in range(3))
    plain = publish_index(_stage(tmp_path, "v1", t1), tmp_path, "two_tower", 3, t1)
    finals = publish_set(_stage_set(tmp_path, "v1", t2), tmp_path, "two_tower", 3, t2)
    names = [p.name for p in finals]
    assert names == [f"v1-20250701T040000Z-shard{i}of3" for i in range(3)]
    current = read_pointer(tmp_path / "two_tower" / "current")
    assert current["dir"] == names[0] and current["shards"] == names
    unit = current_set(tmp_path, "two_tower")
    assert unit.sharded and unit.dirs == names and unit.key == "v1-20250701T040000Z-c1-x3"
    assert set_problems(unit) == []
    assert [s.dirs for s in index_sets(tmp_path, "two_tower")] == [[plain.name], names]

    # A newer plain build, then rolling back lands on the whole set.
    publish_index(_stage(tmp_path, "v2", t3), tmp_path, "two_tower", 3, t3)
    back = rollback(tmp_path, "two_tower", T0)
    assert back["dir"] == names[0] and back["shards"] == names

    # keep=1 deletes whole sets, never part of one, and never the set serving.json names.
    write_json_atomic(tmp_path / "two_tower" / SERVING, {"dir": names[0]})
    prune(tmp_path, "two_tower", 1)
    assert sorted(p.name for p, _ in list_indexes(tmp_path, "two_tower")) == [*names, "v2-20250701T050000Z"]  # fmt: skip

    # A set with a shard gone is skipped by rollback (no intact older build).
    write_json_atomic(tmp_path / "two_tower" / SERVING, {})
    for shard in finals[1:2]:
        for f in shard.iterdir():
            f.unlink()
        shard.rmdir()
    write_json_atomic(tmp_path / "two_tower" / "current", {"dir": "v2-20250701T050000Z"})
    with pytest.raises(AnnError, match="no intact index older than v2"):
        rollback(tmp_path, "two_tower", T0)


def test_set_problems_name_missing_doubled_and_mixed_shards(tmp_path: Path) -> None:
    finals = publish_set(_stage_set(tmp_path, "v1", T0), tmp_path, "two_tower", 3, T0)
    (unit,) = index_sets(tmp_path, "two_tower")
    builds = list(unit.builds)

    def problems(members: list) -> str:
        return "; ".join(set_problems(IndexSet(unit.key, tuple(members))))

    assert problems(builds[:1] + builds[2:]) == f"index set {unit.key} is missing shard 1 of 3"
    assert "holds shard 0 twice" in problems([builds[0], builds[0], builds[2]])
    other = (builds[1][0], {**builds[1][1], "model_version": "v2"})
    assert "mixes model_version v1, v2" in problems([builds[0], other, builds[2]])
    other = (builds[1][0], {**builds[1][1], "corpus_snapshot": "c2"})
    assert "mixes corpus_snapshot c1, c2" in problems([builds[0], other, builds[2]])
    fewer = (builds[1][0], {**builds[1][1], "num_items": 1})
    assert "its shards say 50" in problems([builds[0], fewer, builds[2]])
    assert len(finals) == 3
