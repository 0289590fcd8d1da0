"""``HnswIndex``: the ANN index behind one class (build / save / load / query).

An hnswlib inner-product graph whose labels are pin ids. ``save`` writes ``index.bin`` and
``metadata.json`` side by side: the HNSW parameters, dim, metric, num_items, the version
facts the caller passes (model name and version, built_at, corpus snapshot, sha256 of the
item tower) and the sha256 of ``index.bin``, which ``load`` checks before reading.
"""

from __future__ import annotations

import dataclasses
import json
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from towerline.core.errors import RefusedError
from towerline.core.files import sha256_file

INDEX_FILE, METADATA_FILE = "index.bin", "metadata.json"
METRIC = "ip"  # both towers L2-normalise, so inner product = cosine
FORMAT = 1


class AnnError(RefusedError):
    """An index or index store does not hold what was asked for."""


class IndexIntegrityError(AnnError):
    """An index file does not match the sha256 recorded in its metadata."""


@dataclasses.dataclass(frozen=True)
class HnswParams:
    """Graph degree ``M``, build beam ``ef_construction``, default query beam ``ef_search``
    (hnswlib searches with max(ef, k)). The recall a beam buys depends on how the vectors
    spread (at ef 100, k 100: 0.997 on clustered, 0.46 on isotropic 100k x 64 sets), so the
    index job measures it on its corpus (``batch.index.calibrate_ef``)."""

    M: int = 16
    ef_construction: int = 200
    ef_search: int = 100
    random_seed: int = 100

    def __post_init__(self) -> None:
        if min(self.M, self.ef_construction, self.ef_search) < 1:
            raise AnnError(f"HNSW parameters must be >= 1, got {self}")

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class HnswIndex:
    """Pin ids + (N, dim) float32 item embeddings -> top-k by inner product.

    ``metadata`` holds the version facts the caller passes to ``build`` (model_name,
    model_version, built_at, corpus_snapshot, ``sha256: {item_tower}``); ``save`` adds
    dim, metric, num_items, the HNSW parameters and the sha256 of ``index.bin``.
    """

    def __init__(self, index: hnswlib.Index, params: HnswParams, metadata: dict[str, Any]):
        self._index = index
        self.params = params
        self.metadata = metadata
        self._ef = params.ef_search
        index.set_ef(self._ef)

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        params: HnswParams = HnswParams(),
        num_threads: int = -1,
        metadata: dict[str, Any] | None = None,
    ) -> HnswIndex:
        """Index ``vectors`` (N, dim) under labels ``ids`` (N,) unique non-negative int64.
        ``num_threads`` -1 = all cores (the build is the slow part: ~2 min for 1M x 64)."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids) or len(ids) == 0:
            raise AnnError(f"need (N, dim) vectors for N > 0 ids, got {vectors.shape}, {ids.shape}")
        if ids.min() < 0 or len(np.unique(ids)) != len(ids):
            raise AnnError("ids must be unique and non-negative (they are hnswlib labels)")
        if not np.isfinite(vectors).all():
            raise AnnError("vectors hold NaN or inf")
        index = hnswlib.Index(space=METRIC, dim=vectors.shape[1])
        index.init_index(len(ids), params.M, params.ef_construction, params.random_seed)
        index.add_items(vectors, ids, num_threads=num_threads)
        return cls(index, params, dict(metadata or {}))

    @property
    def dim(self) -> int:
        return int(self._index.dim)

    def __len__(self) -> int:
        return int(self._index.get_current_count())

    def query(
        self, vectors: np.ndarray, k: int, ef: int | None = None, num_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, dim) or (dim,) queries -> ids (Q, k') int64 and scores (Q, k') float32 (inner
        products, best first), k' = min(k, len). One thread by default: a single request is
        latency-bound and concurrent requests already use the cores. Changing ``ef`` is not
        safe while another thread queries the same index."""
        queries = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        ef = self.params.ef_search if ef is None else ef
        if ef != self._ef:
            self._index.set_ef(ef)
            self._ef = ef
        labels, distances = self._index.knn_query(
            queries, k=min(k, len(self)), num_threads=num_threads
        )
        # hnswlib's ip "distance" is 1 - <q, x>; labels are uint64 holding our int64 ids.
        return labels.view(np.int64), 1.0 - distances

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``index.bin`` and ``metadata.json`` into ``directory``; returns the metadata."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._index.save_index(str(directory / INDEX_FILE))
        meta = {
            **self.metadata,
            "dim": self.dim,
            "metric": METRIC,
            "num_items": len(self),
            "hnsw": self.params.to_json(),
            "sha256": {
                **self.metadata.get("sha256", {}),
                "index": sha256_file(directory / INDEX_FILE),
            },
            "index_file": INDEX_FILE,
            "format": FORMAT,
            "library": {"hnswlib": package_version("hnswlib")},
        }
        (directory / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        self.metadata = meta
        return meta

    @classmethod
    def load(cls, directory: Path, verify: bool = True) -> HnswIndex:
        """The index saved in ``directory``; ``verify`` checks ``index.bin``'s sha256 first."""
        directory = Path(directory)
        meta = verify_index(directory) if verify else read_metadata(directory)
        index = hnswlib.Index(space=meta["metric"], dim=int(meta["dim"]))
        index.load_index(str(directory / INDEX_FILE))
        params = HnswParams(**{k: int(v) for k, v in meta["hnsw"].items()})
        return cls(index, params, meta)


def read_metadata(directory: Path) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise AnnError(f"{directory} is not an index directory (no {METADATA_FILE})")
    return json.loads(path.read_text())


def verify_index(directory: Path) -> dict[str, Any]:
    """The metadata of ``directory`` once ``index.bin`` matches its recorded sha256."""
    meta = read_metadata(directory)
    path = Path(directory) / meta.get("index_file", INDEX_FILE)
    if not path.is_file():
        raise IndexIntegrityError(f"{directory}: {path.name} is missing")
    actual = sha256_file(path)
    if actual != meta["sha256"]["index"]:
        raise IndexIntegrityError(
            f"{directory}: {path.name} does not match its sha256 (metadata "
            f"{meta['sha256']['index'][:12]}…, file {actual[:12]}…); refusing a corrupted index"
        )
    return meta
