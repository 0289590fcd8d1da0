"""An index larger than one host: pins split by a stable hash of their id, merged by score.

``shard_of`` assigns a pin to one of S shards with the splitmix64 finaliser of its id,
pure integer arithmetic: the same pin lands in the same shard in every process, run and
runner (Python's ``hash()`` is salted per process for strings and is not a spec). Each
shard is a normal ``HnswIndex``; ``ShardedIndex`` queries all of them for k and merges the
answers by inner product into one top-k (``merge_top_k``). Exact per-shard top-k lists
merge into the exact global top-k: every pin of the global top-k is in its own shard's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from towerline.core.ann.hnsw import AnnError, HnswIndex, HnswParams

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def shard_of(pin_ids: np.ndarray, count: int) -> np.ndarray:
    """Pin ids (N,) int64 -> shard (N,) int64 in [0, count): splitmix64(id) mod count."""
    if count < 1:
        raise AnnError(f"a set needs at least 1 shard, got {count}")
    x = np.asarray(pin_ids, np.int64).astype(np.uint64)  # two's complement, wraps mod 2^64
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    x ^= x >> np.uint64(31)
    return (x % np.uint64(count)).astype(np.int64)


def merge_top_k(
    ids: Sequence[np.ndarray], scores: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-shard answers, ids (Q, k_s) and scores (Q, k_s) each -> the best ``k`` of their
    union per row: ids (Q, k') int64, scores (Q, k') float32, best first; k' = min(k,
    sum k_s). Ties keep shard order, so the merge is deterministic."""
    all_ids = np.concatenate(ids, axis=1)
    all_scores = np.concatenate(scores, axis=1)
    k = min(k, all_ids.shape[1])
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_ids, order, 1), np.take_along_axis(all_scores, order, 1)


class ShardedIndex:
    """The S shards of one set behind ``HnswIndex``'s query interface (ids, scores)."""

    def __init__(self, shards: Sequence[HnswIndex], metadata: dict[str, Any]) -> None:
        if not shards or len({s.dim for s in shards}) != 1:
            raise AnnError(f"shards of one set need one dim, got {[s.dim for s in shards]}")
        self.shards = list(shards)
        self.metadata = metadata  # the set's facts (version, snapshot, built_at, shard count)

    @classmethod
    def load(cls, directories: Sequence[Path], verify: bool = True) -> ShardedIndex:
        shards = [HnswIndex.load(d, verify=verify) for d in directories]
        meta = {**shards[0].metadata, "num_items": sum(len(s) for s in shards)}
        return cls(shards, meta)

    @property
    def dim(self) -> int:
        return self.shards[0].dim

    @property
    def params(self) -> HnswParams:
        return self.shards[0].params

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def query(
        self, vectors: np.ndarray, k: int, ef: int | None = None, num_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, dim) or (dim,) queries -> merged ids (Q, k') and scores (Q, k'), best first.
        Each shard answers its own top-k with its own calibrated beam (or ``ef``)."""
        parts = [s.query(vectors, k, ef=ef, num_threads=num_threads) for s in self.shards]
        return merge_top_k([p[0] for p in parts], [p[1] for p in parts], k)
