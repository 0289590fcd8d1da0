"""`batch encode`, `batch corpus` and `batch index` (one index and a set of shards) on Beam's DaskRunner, on a real
``dask.distributed`` cluster (a ``LocalCluster`` of 2 worker processes on loopback): each
job's published output equals the DirectRunner's for the same input, row for row.

The jobs run unchanged; only their pipeline options differ (what a user passes after `--`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import distributed  # towerline[dask], which `make setup` installs
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import encode_output as out
from batch.corpus import CORPUS_FILE, MAP_FILE, run_corpus
from batch.corpus_steps import CorpusConfig
from batch.encode_job import EncodeConfig, run_encode
from batch.index import run_index
from batch.index_shards import run_sharded_index
from tests.batch.conftest import END

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"  # no short name in Beam 2.77
# The DirectRunner in one process: the reference output, quickly.
DIRECT = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
NOW = dt.datetime(2025, 7, 1, 6, tzinfo=dt.UTC)  # build time of both index runs
CORPUS_CFG = CorpusConfig(END, half_life_days=7.0, shards=4)
# Every job module a worker must import to run these pipelines' DoFns.
JOB_MODULES = ("batch.encode", "batch.corpus_steps", "batch.index", "batch.index_shards")


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[distributed.LocalCluster]:
    """Two worker processes, one thread each, on loopback; no dashboard. Nanny warnings
    (a worker that imported torch takes over 4 s to exit and is killed) stay quiet."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def dask_args(dask_cluster: distributed.LocalCluster) -> list[str]:
    """What a user passes after `--`; ``--dask_npartitions`` splits each Create (one
    element per input partition) so both workers get work."""
    return [
        f"--runner={DASK_RUNNER}",
        f"--dask_client_address={dask_cluster.scheduler_address}",
        "--dask_npartitions=2",
    ]


def _imported(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if m in sys.modules]  # runs in a worker process


def job_modules_on_workers(cluster: distributed.LocalCluster) -> dict[str, list[str]]:
    """worker address -> the job modules its process has imported (it started bare, so
    an import there means it ran the job's DoFns)."""
    with distributed.Client(cluster.scheduler_address) as client:
        return client.run(_imported, JOB_MODULES)


@pytest.fixture(scope="module")
def direct_snapshot(tmp_path_factory: pytest.TempPathFactory, encode_world: Path) -> Path:
    """The corpus snapshot of the tiny world, built on the DirectRunner."""
    out_dir = tmp_path_factory.mktemp("dask-direct-corpus")
    return Path(run_corpus(encode_world, CORPUS_CFG, out_dir, DIRECT, now=NOW)["path"])


def test_encode_on_dask_equals_direct(
    tmp_path: Path,
    encode_world: Path,
    encode_registry: Path,
    dask_cluster: distributed.LocalCluster,
    dask_args: list[str],
) -> None:
    published = {}
    for name, args in (("direct", DIRECT), ("dask", dask_args)):
        lake = Path(shutil.copytree(encode_world, tmp_path / name / "lake"))
        cfg = EncodeConfig(lake=lake, day=END, registry=encode_registry, shards=4, progress=False)
        summary = run_encode(cfg, pipeline_args=args, store=None)
        paths = out.OutputPaths.of(lake, END, summary["model_version"])
        published[name] = (summary, paths)

    (direct, direct_paths), (dask, dask_paths) = published["direct"], published["dask"]
    assert dask["rows"] == direct["rows"] == 120  # every user of the world
    assert dask["offline_path"].endswith("dt=2025-06-30/v2")
    assert _rows(out.read_published(dask_paths), "user_id") == _rows(
        out.read_published(direct_paths), "user_id"
    )
    assert out.read_manifest(dask_paths.final) == out.read_manifest(direct_paths.final)
    # The DaskRunner reports no counters: the summary says "unknown", never a false 0.
    assert direct["events"] > 0 and dask["events"] is None
    workers = job_modules_on_workers(dask_cluster)
    assert any("batch.encode" in found for found in workers.values())


def test_corpus_on_dask_equals_direct(
    tmp_path: Path,
    encode_world: Path,
    direct_snapshot: Path,
    dask_cluster: distributed.LocalCluster,
    dask_args: list[str],
) -> None:
    manifest = run_corpus(encode_world, CORPUS_CFG, tmp_path / "dask", dask_args, now=NOW)
    snapshot = Path(manifest["path"])

    for name in (CORPUS_FILE, MAP_FILE):
        dask_rows, direct_rows = (pq.read_table(s / name) for s in (snapshot, direct_snapshot))
        assert dask_rows.num_rows > 0
        assert dask_rows.to_pylist() == direct_rows.to_pylist(), name  # ranked: row order too
    # Same parameters and content: the same snapshot id and files.
    assert snapshot.name == direct_snapshot.name
    direct_manifest = json.loads((direct_snapshot / "manifest.json").read_text())
    assert manifest["files"] == direct_manifest["files"]
    workers = job_modules_on_workers(dask_cluster)
    assert any("batch.corpus_steps" in found for found in workers.values())


def test_index_on_dask_equals_direct(
    tmp_path: Path,
    encode_registry: Path,
    direct_snapshot: Path,
    dask_cluster: distributed.LocalCluster,
    dask_args: list[str],
) -> None:
    direct, dask = build_on_both(run_index, direct_snapshot, encode_registry, tmp_path, dask_args)
    assert dask["num_items"] == pq.read_metadata(direct_snapshot / CORPUS_FILE).num_rows
    # index.bin holds every pin's vector and the graph: equal sha256, equal index; the same
    # for the pins' interests, the calibration and every other fact of the build.
    same = {k: v for k, v in dask.items() if k not in ("path", "seconds")}
    assert same == {k: v for k, v in direct.items() if k not in ("path", "seconds")}
    assert dask["sha256"]["index"] == direct["sha256"]["index"]
    workers = job_modules_on_workers(dask_cluster)
    assert any("batch.index" in found for found in workers.values())


def test_sharded_index_on_dask_equals_direct(
    tmp_path: Path,
    encode_registry: Path,
    direct_snapshot: Path,
    dask_cluster: distributed.LocalCluster,
    dask_args: list[str],
) -> None:
    sharded = functools.partial(run_sharded_index, shards=3)
    direct, dask = build_on_both(sharded, direct_snapshot, encode_registry, tmp_path, dask_args)
    assert dask["num_items"] == pq.read_metadata(direct_snapshot / CORPUS_FILE).num_rows
    assert [s["num_items"] for s in dask["shards"]] == [s["num_items"] for s in direct["shards"]]
    for dask_dir, direct_dir in zip(dask["paths"], direct["paths"], strict=True):
        # Each shard: the same pins, vectors and graph (sha256 of index.bin), the same facts.
        assert Path(dask_dir).name == Path(direct_dir).name
        dask_meta, direct_meta = (json.loads((Path(d) / "metadata.json").read_text()) for d in (dask_dir, direct_dir))  # fmt: skip
        assert dask_meta == direct_meta
    workers = job_modules_on_workers(dask_cluster)
    assert any("batch.index_shards" in found for found in workers.values())


def build_on_both(build, snapshot: Path, registry: Path, out: Path, dask_args: list[str]) -> tuple[dict, dict]:  # fmt: skip
    """``build`` (an index job) of v1 over ``snapshot``, on the DirectRunner then on Dask.
    One hnswlib thread: the same vectors in the same order give the same graph."""
    return tuple(
        build(snapshot, registry, "v1", out / name, threads=1, pipeline_args=args, now=NOW)
        for name, args in (("direct", DIRECT), ("dask", dask_args))
    )


def _rows(table: pa.Table, key: str) -> list[dict]:
    return table.sort_by(key).to_pylist()
