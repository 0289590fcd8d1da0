"""Builders for the freshness monitor's tests: ledger lines, a real index store with
``serving.json``, a registry layout, and a fixed clock."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from towerline.core import ledger
from towerline.core.ann import (
    SERVING,
    HnswIndex,
    HnswParams,
    model_root,
    new_staging,
    publish_index,
    publish_set,
)
from towerline.core.ann.sets import shard_facts
from towerline.core.files import write_json_atomic

NOW = dt.datetime(2025, 7, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
MODEL = "two_tower"


def record(path: Path, job: str, outcome: str, finished: dt.datetime, **extra) -> ledger.RunRecord:
    """Append one finished run of ``job`` to the ledger at ``path`` (views as the job writes)."""
    rec = ledger.RunRecord(
        job=job,
        outcome=outcome,
        started_at=finished - dt.timedelta(minutes=5),
        finished_at=finished,
        views=ledger.JOB_VIEWS.get(job, ()),
        error=None if outcome == ledger.SUCCESS else "boom: the job failed",
        **extra,
    )
    ledger.append(path, rec)
    return rec


def build_index(indexes: Path, version: str, built_at: dt.datetime, corpus_day: dt.date) -> Path:
    """A real (tiny) HNSW build of ``version`` published into the index store."""
    rng = np.random.default_rng(int(version[1:]))
    snapshot = f"corpus-{corpus_day:%Y%m%d}-0123456789"
    meta = {
        "model_name": MODEL,
        "model_version": version,
        "built_at": built_at.isoformat(),
        "corpus_snapshot": snapshot,
        "sha256": {"item_tower": "0" * 64},
    }
    index = HnswIndex.build(np.arange(50), rng.normal(size=(50, 8)), HnswParams(M=4, ef_construction=20), 1, meta)  # fmt: skip
    staging = new_staging(indexes, MODEL)
    index.save(staging)
    return publish_index(staging, indexes, MODEL, keep=3, now=built_at)


def build_set(indexes: Path, version: str, built_at: dt.datetime, corpus_day: dt.date, count: int) -> Path:  # fmt: skip
    """``count`` real shards of one set of ``version`` published together; returns shard 0."""
    rng = np.random.default_rng(int(version[1:]))
    facts = {
        "model_name": MODEL,
        "model_version": version,
        "built_at": built_at.isoformat(),
        "corpus_snapshot": f"corpus-{corpus_day:%Y%m%d}-0123456789",
        "sha256": {"item_tower": "0" * 64},
    }
    stagings = []
    for i in range(count):
        meta = shard_facts(facts, i, count, set_items=20 * count)
        index = HnswIndex.build(np.arange(20) + 20 * i, rng.normal(size=(20, 8)), HnswParams(M=4, ef_construction=20), 1, meta)  # fmt: skip
        stagings.append(new_staging(indexes, MODEL))
        index.save(stagings[-1])
    return publish_set(stagings, indexes, MODEL, keep=3, now=built_at)[0]


def serve_pointer(indexes: Path, build: Path, published_at: dt.datetime) -> dict:
    """Write ``serving.json`` naming ``build`` (what `towerline publish` writes)."""
    meta = json.loads((build / "metadata.json").read_text())
    doc = {
        "model_name": MODEL,
        "model_version": meta["model_version"],
        "dir": build.name,
        "index_sha256": meta["sha256"]["index"],
        "corpus_snapshot": meta["corpus_snapshot"],
        "published_at": published_at.isoformat(),
        "previous": None,
    }
    write_json_atomic(model_root(indexes, MODEL) / SERVING, doc)
    return doc


def register(registry: Path, *versions: str) -> None:
    """Registry directories as `train` leaves them (a manifest marks a complete version)."""
    for version in versions:
        folder = registry / MODEL / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").write_text(json.dumps({"version": version, "files": {}}))
