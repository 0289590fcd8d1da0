"""`towerline batch index`: the item tower of version V over a corpus snapshot -> HNSW index.

A Beam job (DirectRunner by default, any runner through standard pipeline options)::

    corpus.parquet record batches ─ EmbedItems ─ CombineGlobally(GatherEmbeddings)
        ─ BuildIndex (HnswIndex.build + save into a staging directory)

then ``run_index`` publishes the staged directory (fsync, rename to
``<INDEXES>/<model_name>/<version>-<built_at>``, flip ``current`` with ``os.replace``) and
keeps the last N builds (``towerline.core.ann``). With ``reuse``, an intact build of the same
item tower over the same corpus snapshot with the same graph parameters (``find_build``) is
returned instead and nothing is built: what makes a rerun of the daily chain build nothing.

Embedding is a Beam step, not a plain torch loop: each element is a record batch of up to
65,536 corpus pins, so Beam's per-element cost vanishes, the item tower is loaded once per
worker (``setup``), and on a distributed runner the tower runs on every worker. The HNSW
graph is one in-memory structure, so the vectors meet in one global combine and one
worker builds it with all its cores. Staging must be a filesystem that worker and this
process share (local disk on the DirectRunner).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from apache_beam.io.parquetio import ReadAllFromParquetBatched
from apache_beam.options.pipeline_options import PipelineOptions

from batch.corpus import CORPUS_FILE, resolve_snapshot
from batch.pipeline_run import run_to_end
from model.artifacts import load_config, load_item_tower
from model.registry import verify_version
from towerline.core.ann import (
    METADATA_FILE,
    SERVING,
    SHARD,
    AnnError,
    HnswIndex,
    HnswParams,
    IndexSet,
    current_set,
    index_sets,
    model_root,
    new_staging,
    publish_index,
    read_metadata,
    read_pointer,
    verify_set,
)
from towerline.core.ann.interests import INTERESTS_FILE, PinInterests
from towerline.core.contracts import DEFAULT_MODEL_NAME, PAD_INTEREST
from towerline.core.errors import InputError
from towerline.core.files import sha256_file, write_json_atomic
from towerline.core.slots import interest_slots, pad_slots

ITEM_COLUMNS = ["pin_id", "interest_ids", "interest_confidences"]
EF_LADDER = (100, 150, 200, 300, 500, 800)  # query beams tried, cheapest first
Embedded = tuple[np.ndarray, np.ndarray]  # ids (B,) int64, vectors (B, dim) float32


class IndexJobError(InputError):
    """The index cannot be built from what was given."""


def item_inputs(batch: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Corpus rows (B) -> ItemTower inputs: ids (B,) int64, interest ids (B, 3) int64
    (``PAD_INTEREST`` after the last), confidences (B, 3) float32 (0 on padding) — the
    layout ``model.lake_io.read_pins`` gives training, so both towers see the same input."""
    ids = batch["pin_id"].to_numpy().astype(np.int64)
    interests, conf = interest_slots(batch["interest_ids"], batch["interest_confidences"])
    return ids, interests, conf


class EmbedItems(beam.DoFn):
    """Corpus record batch (B rows) -> (ids (B,), vectors (B, dim) float32)."""

    def __init__(self, registry: str, version: str, model_name: str, chunk: int = 8192):
        self.registry = registry
        self.version = version
        self.model_name = model_name
        self.chunk = chunk  # rows per forward pass: bounds the activations' memory
        self.tower: torch.nn.Module | None = None

    def setup(self) -> None:
        # One torch thread: measured best on these shared 2-core hosts (DESIGN.md), and the
        # runner parallelises over bundles anyway.
        torch.set_num_threads(1)
        self.tower = load_item_tower(Path(self.registry), self.version, self.model_name)

    def process(self, batch: pa.Table) -> Iterator[Embedded]:
        ids, interests, conf = item_inputs(batch)
        out = []
        with torch.inference_mode():
            for lo in range(0, len(ids), self.chunk):
                part = slice(lo, lo + self.chunk)
                args = (torch.from_numpy(a[part]) for a in (ids, interests, conf))
                out.append(self.tower(*args).numpy())
        if out:
            yield ids, np.concatenate(out).astype(np.float32, copy=False)


class GatherEmbeddings(beam.CombineFn):
    """Embedded batches -> one (ids (N,), vectors (N, dim)) pair sorted by pin id."""

    def create_accumulator(self) -> list[Embedded]:
        return []

    def add_input(self, acc: list[Embedded], chunk: Embedded) -> list[Embedded]:
        acc.append(chunk)
        return acc

    def merge_accumulators(self, accumulators: Iterable[list[Embedded]]) -> list[Embedded]:
        return [chunk for acc in accumulators for chunk in acc]

    def extract_output(self, acc: list[Embedded]) -> Embedded:
        if not acc:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        ids = np.concatenate([i for i, _ in acc])
        order = np.argsort(ids, kind="stable")
        return ids[order], np.concatenate([v for _, v in acc])[order]


class EmbedCorpus(beam.PTransform):
    """PCollection[corpus record batch] -> PCollection of one (ids, vectors) pair."""

    def __init__(self, registry: Path, version: str, model_name: str = DEFAULT_MODEL_NAME):
        super().__init__()
        self.embed = EmbedItems(str(registry), version, model_name)

    def expand(self, batches):
        return (
            batches
            | "EmbedItems" >> beam.ParDo(self.embed)
            | "Gather" >> beam.CombineGlobally(GatherEmbeddings())
        )


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) rows of ``vectors`` (N, dim) with the largest inner products, best first."""
    matrix = torch.from_numpy(vectors)
    parts = [
        (torch.from_numpy(queries[lo : lo + 32]) @ matrix.T).topk(k, dim=1).indices.numpy()
        for lo in range(0, len(queries), 32)  # 32 x N scores at a time bound the memory
    ]
    return np.concatenate(parts)


def calibrate_ef(
    index: HnswIndex,
    ids: np.ndarray,
    vectors: np.ndarray,
    k: int = 100,
    target: float = 0.95,
    sample: int = 200,
    ladder: tuple[int, ...] = EF_LADDER,
) -> dict[str, Any]:
    """The smallest ef of ``ladder`` whose recall@k, for ``sample`` corpus items used as
    queries, reaches ``target`` against exact search (else the largest). Recall depends on
    how the embeddings spread (0.46 to 0.997 at ef 100 on 100k x 64 test sets), so it is
    measured on this corpus rather than assumed. Returns {ef_search, recall_at_k, k, ...}."""
    k = min(k, len(ids))
    rows = np.random.default_rng(0).choice(len(ids), min(sample, len(ids)), replace=False)
    exact = ids[exact_top(vectors, vectors[rows], k)]
    for ef in ladder:
        found, _ = index.query(vectors[rows], k, ef=ef, num_threads=-1)
        recall = np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, exact, strict=True)]) / k
        if recall >= target:
            break
    return {
        "ef_search": ef,
        "recall_at_k": round(float(recall), 4),
        "k": k,
        "target": target,
        "queries": len(rows),
    }


class BuildIndex(beam.DoFn):
    """(ids, vectors) -> ``HnswIndex`` saved into ``staging``; yields its metadata.
    ``calibrate``: replace ``params.ef_search`` by ``calibrate_ef``'s (recorded either way)."""

    def __init__(
        self, staging: str, params: HnswParams, threads: int, metadata: dict, calibrate: bool
    ) -> None:
        self.staging, self.params, self.threads, self.metadata = staging, params, threads, metadata
        self.calibrate = calibrate

    def process(self, element: Embedded) -> Iterator[dict[str, Any]]:
        ids, vectors = element
        if len(ids) == 0:
            raise IndexJobError("the corpus snapshot holds no items to index")
        index = HnswIndex.build(ids, vectors, self.params, self.threads, self.metadata)
        ladder = EF_LADDER if self.calibrate else (self.params.ef_search,)
        found = calibrate_ef(index, ids, vectors, ladder=ladder)
        if found["recall_at_k"] < found["target"]:
            logging.warning(
                "index recall@%d is %.3f at ef %d, below %.2f",
                *map(found.get, ("k", "recall_at_k", "ef_search", "target")),
            )
        index.params = dataclasses.replace(index.params, ef_search=found["ef_search"])
        index.metadata["calibration"] = found
        yield index.save(Path(self.staging))


def build_pipeline(p: beam.Pipeline, corpus_file: Path, registry: Path, build: BuildIndex) -> None:
    """Read ``corpus_file``, embed it with the item tower ``build.metadata`` names, build."""
    meta = build.metadata
    _ = (
        p
        # Create + ReadAll rather than ReadFromParquetBatched: Beam's DaskRunner runs no
        # `Read` source, only Create and ParDos.
        | "CorpusFile" >> beam.Create([str(corpus_file)])
        | "ReadCorpus" >> ReadAllFromParquetBatched(columns=ITEM_COLUMNS)
        | "EmbedCorpus" >> EmbedCorpus(registry, meta["model_version"], meta["model_name"])
        | "BuildIndex" >> beam.ParDo(build)
    )


def version_facts(
    registry: Path, version: str | None, model_name: str, snapshot_id: str, now: dt.datetime
) -> tuple[dict[str, Any], int]:
    """(the version metadata an index of ``version`` carries, the version's embedding dim)."""
    version, cfg = load_config(Path(registry), version, model_name)
    tower_sha = verify_version(Path(registry), model_name, version)["files"]["item_tower.pt"]
    facts = {
        "model_name": model_name,
        "model_version": version,
        "built_at": now.isoformat(),
        "corpus_snapshot": snapshot_id,
        "sha256": {"item_tower": tower_sha},
    }
    return facts, cfg.dim


def save_pin_interests(corpus_file: Path, staging: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the indexed pins' interests beside the index (serving's interest and diversity
    rules read them, never the lake) and record their sha256 in ``metadata.json``."""
    table = pq.read_table(corpus_file, columns=["pin_id", "interest_ids"])
    interests = pad_slots(table["interest_ids"], PAD_INTEREST, np.int64)
    path = PinInterests.build(table["pin_id"].to_numpy(), interests).save(staging)
    meta = {
        **meta,
        "sha256": {**meta["sha256"], "pin_interests": sha256_file(path)},
        "pin_interests_file": INTERESTS_FILE,
    }
    write_json_atomic(staging / METADATA_FILE, meta)
    return meta


def same_build(
    meta: dict[str, Any], facts: dict[str, Any], params: HnswParams, calibrate: bool
) -> bool:
    """Whether the build ``meta`` is what building ``facts`` (``version_facts``) with
    ``params`` would make: same model, version, item tower, corpus snapshot and graph. The
    query beam counts only when it is not calibrated (calibration picks it from the data).
    A shard's place in its set is not compared: ``find_build`` matches the set's size."""
    graph = params.to_json()
    if calibrate:
        graph.pop("ef_search")
    built = meta.get("hnsw") or {}
    return (
        all(meta.get(k) == facts[k] for k in ("model_name", "model_version", "corpus_snapshot"))
        and (meta.get("sha256") or {}).get("item_tower") == facts["sha256"]["item_tower"]
        and all(built.get(k) == v for k, v in graph.items())
    )


def find_build(
    out: Path, facts: dict[str, Any], params: HnswParams, calibrate: bool = True, shards: int = 1
) -> tuple[Path, dict[str, Any]] | None:
    """An intact published build that ``same_build`` takes for ``facts`` — with ``shards``
    > 1, a whole set of that many shards, each of which it takes — or None. The one
    ``serving.json`` names comes first, then ``current``, then the newest, so a rerun picks
    the build already served and changes no pointer. Returns (its directory, its metadata);
    for a set, shard 0's with the set's ``num_items``, ``paths`` and ``shards`` added."""
    model_name = facts["model_name"]
    matching = [
        unit
        for unit in index_sets(out, model_name)
        if unit.count == shards
        and all(same_build(m, facts, params, calibrate) for _, m in unit.builds)
    ]
    serving = (read_pointer(model_root(out, model_name) / SERVING) or {}).get("dir")
    current = current_set(out, model_name)
    first = [u for u in matching if serving in u.dirs]
    first += [u for u in matching if current is not None and u.key == current.key]
    by_key = {unit.key: unit for unit in matching}
    for unit in map(by_key.get, dict.fromkeys(u.key for u in first + matching[::-1])):
        try:
            metas = verify_set(unit)
            if any(_interests_damaged(path, meta) for path, meta in zip(unit.paths, metas, strict=True)):  # fmt: skip
                continue  # serving's interest rules would read a damaged file
            return unit.paths[0], set_summary(unit, metas)
        except (AnnError, OSError):
            continue  # damaged: never reused, a new build replaces it
    return None


def _interests_damaged(path: Path, meta: dict[str, Any]) -> bool:
    name = meta.get("pin_interests_file")
    return bool(name) and sha256_file(path / name) != meta["sha256"].get("pin_interests")


def set_summary(unit: IndexSet, metas: list[dict[str, Any]]) -> dict[str, Any]:
    """A build's metadata as the index jobs return it; a set's adds the set's ``num_items``,
    every shard's directory (``paths``) and per-shard {dir, num_items, ef_search,
    recall_at_k} (``shards``)."""
    if not unit.sharded:
        return metas[0]
    return {
        **metas[0],
        "num_items": metas[0][SHARD]["set_items"],
        "paths": [str(p) for p in unit.paths],
        "shards": [
            {
                "dir": p.name,
                "num_items": m["num_items"],
                "ef_search": m["hnsw"]["ef_search"],
                "recall_at_k": (m.get("calibration") or {}).get("recall_at_k"),
            }
            for p, m in zip(unit.paths, metas, strict=True)
        ],
    }


def run_index(
    corpus: Path,
    registry: Path,
    version: str | None,
    out: Path,
    params: HnswParams | None = None,
    calibrate: bool = True,
    model_name: str = DEFAULT_MODEL_NAME,
    keep: int = 3,
    threads: int = -1,
    pipeline_args: list[str] | None = None,
    now: dt.datetime | None = None,
    reuse: bool = False,
) -> dict[str, Any]:
    """Build, stage and publish the index of ``version`` (None / "latest" = newest) over the
    corpus snapshot ``corpus``; returns its metadata plus ``path``, ``seconds`` and
    ``reused`` (with ``reuse``: an intact build ``find_build`` finds is returned as it is,
    nothing is built and no pointer moves).

    ``params`` default ``HnswParams()``; with ``calibrate`` its ``ef_search`` is replaced by
    the smallest on ``EF_LADDER`` reaching recall@100 0.95 on this corpus. ``threads``:
    hnswlib build threads (-1 = all cores)."""
    started, now = time.monotonic(), now or dt.datetime.now(dt.UTC)
    snapshot, manifest = resolve_snapshot(corpus)
    facts, dim = version_facts(registry, version, model_name, manifest["snapshot_id"], now)
    params = params or HnswParams()
    found = find_build(out, facts, params, calibrate) if reuse else None
    if found is not None:
        seconds = round(time.monotonic() - started, 3)
        return {**found[1], "path": str(found[0]), "seconds": seconds, "reused": True}
    staging = new_staging(out, model_name)
    try:
        build = BuildIndex(str(staging), params, threads, facts, calibrate)
        pipeline = beam.Pipeline(options=PipelineOptions(pipeline_args or []))
        build_pipeline(pipeline, snapshot / CORPUS_FILE, registry, build)
        run_to_end(pipeline)  # Ctrl-C ends it at once (batch.interrupt)
        meta = read_metadata(staging)
        if meta["dim"] != dim:
            raise IndexJobError(f"embeddings have dim {meta['dim']}, the model says {dim}")
        meta = save_pin_interests(snapshot / CORPUS_FILE, staging, meta)
        final = publish_index(staging, out, model_name, keep, now)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; left by a failure
    seconds = round(time.monotonic() - started, 3)
    return {**meta, "path": str(final), "seconds": seconds, "reused": False}
