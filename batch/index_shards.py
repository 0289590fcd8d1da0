"""`towerline batch index --shards S`: one index build of version V split into S shards.

An index larger than one host is sharded by pin id and merged by score (DESIGN.md, "Where
it scales"). The Beam job embeds the corpus as ``batch.index`` does, then splits every
embedded batch by ``shard_of(pin_id)`` (a stable hash, the same in every process) and
builds one HNSW graph per shard. The S graphs are S elements, so a distributed runner can
build them on S workers; staging must be a filesystem they and this process share::

    corpus.parquet record batches ─ EmbedItems ─ SplitByShard
        ─ CombinePerKey(GatherEmbeddings) ─ BuildShard (staging/shard-<i>)

Each shard is a normal versioned build (its own ``index.bin``, ``metadata.json``, pin
interests, calibrated ``ef_search``) whose metadata names its place in the set
(``towerline.core.ann.sets``): same version, build time and corpus snapshot for all S.
``run_sharded_index`` then checks every pin landed in exactly one shard, moves the S
directories into the store and flips ``current`` to the set (``publish_set``).
"""

from __future__ import annotations

import datetime as dt
import functools
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.parquetio import ReadAllFromParquetBatched
from apache_beam.options.pipeline_options import PipelineOptions

from batch.corpus import CORPUS_FILE, resolve_snapshot
from batch.index import (
    ITEM_COLUMNS,
    BuildIndex,
    Embedded,
    EmbedItems,
    GatherEmbeddings,
    IndexJobError,
    find_build,
    run_index,
    set_summary,
    version_facts,
)
from batch.pipeline_run import run_to_end
from towerline.core.ann import (
    METADATA_FILE,
    SHARD,
    HnswParams,
    IndexSet,
    new_staging,
    publish_set,
    read_metadata,
    shard_of,
)
from towerline.core.ann.interests import INTERESTS_FILE, PinInterests
from towerline.core.ann.sets import shard_facts
from towerline.core.contracts import DEFAULT_MODEL_NAME, PAD_INTEREST
from towerline.core.files import sha256_file, write_json_atomic
from towerline.core.slots import pad_slots


class SplitByShard(beam.DoFn):
    """(ids (B,), vectors (B, dim)) -> (shard, (ids, vectors) of its pins) per shard present."""

    def __init__(self, count: int) -> None:
        self.count = count

    def process(self, element: Embedded) -> Iterator[tuple[int, Embedded]]:
        ids, vectors = element
        shard = shard_of(ids, self.count)
        for i in np.unique(shard):
            rows = shard == i
            yield int(i), (ids[rows], vectors[rows])


class EmbedShards(beam.PTransform):
    """PCollection[corpus record batch] -> (shard, (ids, vectors) sorted by pin id), one
    element per shard that holds pins."""

    def __init__(self, registry: Path, version: str, model_name: str, count: int) -> None:
        super().__init__()
        self.embed = EmbedItems(str(registry), version, model_name)
        self.count = count

    def expand(self, batches):
        return (
            batches
            | "EmbedItems" >> beam.ParDo(self.embed)
            | "SplitByShard" >> beam.ParDo(SplitByShard(self.count))
            | "GatherShard" >> beam.CombinePerKey(GatherEmbeddings())
        )


class BuildShard(beam.DoFn):
    """(shard i, (ids, vectors)) -> ``BuildIndex`` into ``staging/shard-<i>`` with the
    version facts plus the shard's place; yields its metadata."""

    def __init__(
        self,
        staging: str,
        params: HnswParams,
        threads: int,
        facts: dict[str, Any],
        count: int,
        calibrate: bool,
    ) -> None:
        self.staging, self.params, self.threads = staging, params, threads
        self.facts, self.count, self.calibrate = facts, count, calibrate

    def process(self, element: tuple[int, Embedded]) -> Iterator[dict[str, Any]]:
        i, embedded = element
        # set_items is known once every shard is built (finish_shards records it).
        meta = shard_facts(self.facts, i, self.count, set_items=-1)
        build = BuildIndex(shard_dir(self.staging, i), self.params, self.threads, meta, self.calibrate)  # fmt: skip
        yield from build.process(embedded)


def shard_dir(staging: str | Path, i: int) -> str:
    return str(Path(staging) / f"shard-{i}")


def build_sharded_pipeline(
    p: beam.Pipeline, corpus_file: Path, registry: Path, build: BuildShard
) -> None:
    meta = build.facts
    _ = (
        p
        # Create + ReadAll, as batch.index reads it: Beam's DaskRunner runs no `Read` source.
        | "CorpusFile" >> beam.Create([str(corpus_file)])
        | "ReadCorpus" >> ReadAllFromParquetBatched(columns=ITEM_COLUMNS)
        | "EmbedShards"
        >> EmbedShards(registry, meta["model_version"], meta["model_name"], build.count)
        | "BuildShard" >> beam.ParDo(build)
    )


def finish_shards(corpus_file: Path, stagings: list[Path], dim: int) -> list[dict[str, Any]]:
    """Check the S staged shards hold every corpus pin once, record the set's size and
    write each shard's pin interests beside it; returns their metadata (by shard)."""
    table = pq.read_table(corpus_file, columns=["pin_id", "interest_ids"])
    count = len(stagings)
    empty = [i for i, path in enumerate(stagings) if not (path / METADATA_FILE).is_file()]
    if empty:
        raise IndexJobError(
            f"shard {', '.join(map(str, empty))} of {count} got no pins (the corpus holds "
            f"{table.num_rows}); use fewer --shards"
        )
    metas = [read_metadata(path) for path in stagings]
    total = sum(int(m["num_items"]) for m in metas)
    if total != table.num_rows:
        raise IndexJobError(f"the {count} shards hold {total} pins, the corpus {table.num_rows}")
    if {m["dim"] for m in metas} != {dim}:
        raise IndexJobError(f"embeddings have dim {metas[0]['dim']}, the model says {dim}")
    shard = shard_of(table["pin_id"].to_numpy(), count)
    return [
        save_shard_interests(table.filter(pa.array(shard == i)), path, meta, total)
        for i, (path, meta) in enumerate(zip(stagings, metas, strict=True))
    ]


def save_shard_interests(
    part: pa.Table, staging: Path, meta: dict[str, Any], total: int
) -> dict[str, Any]:
    """``batch.index.save_pin_interests`` for the pins of one shard; also fills in the
    set's size (``set_items``) so publish can tell a set whose shards were swapped."""
    interests = pad_slots(part["interest_ids"], PAD_INTEREST, np.int64)
    path = PinInterests.build(part["pin_id"].to_numpy(), interests).save(staging)
    meta = {
        **meta,
        SHARD: {**meta[SHARD], "set_items": total},
        "sha256": {**meta["sha256"], "pin_interests": sha256_file(path)},
        "pin_interests_file": INTERESTS_FILE,
    }
    write_json_atomic(staging / METADATA_FILE, meta)
    return meta


def index_job(shards: int) -> Callable[..., dict[str, Any]]:
    """The job ``batch index --shards`` runs: ``run_index`` for 1, else a set of ``shards``."""
    return run_index if shards == 1 else functools.partial(run_sharded_index, shards=shards)


def run_sharded_index(
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
    *,
    shards: int,
) -> dict[str, Any]:
    """``batch.index.run_index`` as a set of ``shards`` builds (``shards`` >= 2). Returns
    shard 0's metadata with the set's ``num_items``, ``path`` (shard 0), ``paths``,
    per-shard ``shards`` {dir, num_items, ef_search, recall_at_k}, ``seconds``, ``reused``
    (with ``reuse``: an intact set ``find_build`` finds is returned as it is)."""
    if shards < 2:
        raise IndexJobError(f"--shards must be >= 2 for a sharded build, got {shards}")
    started, now = time.monotonic(), now or dt.datetime.now(dt.UTC)
    snapshot, manifest = resolve_snapshot(corpus)
    facts, dim = version_facts(registry, version, model_name, manifest["snapshot_id"], now)
    params = params or HnswParams()
    found = find_build(out, facts, params, calibrate, shards) if reuse else None
    if found is not None:
        seconds = round(time.monotonic() - started, 3)
        return {**found[1], "path": str(found[0]), "seconds": seconds, "reused": True}
    staging = new_staging(out, model_name)
    try:
        build = BuildShard(str(staging), params, threads, facts, shards, calibrate)
        pipeline = beam.Pipeline(options=PipelineOptions(pipeline_args or []))
        build_sharded_pipeline(pipeline, snapshot / CORPUS_FILE, registry, build)
        run_to_end(pipeline)  # Ctrl-C ends it at once (batch.interrupt)
        stagings = [Path(shard_dir(staging, i)) for i in range(shards)]
        metas = finish_shards(snapshot / CORPUS_FILE, stagings, dim)
        finals = publish_set(stagings, out, model_name, keep, now)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # empty after the moves; left by a failure
    unit = IndexSet(metas[0][SHARD]["set"], tuple(zip(finals, metas, strict=True)))
    seconds = round(time.monotonic() - started, 3)
    return {**set_summary(unit, metas), "path": str(finals[0]), "seconds": seconds, "reused": False}
