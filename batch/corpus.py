"""`towerline batch corpus`: the serving corpus snapshot of one day (a Beam job).

``run_corpus`` builds the pipeline (``build_pipeline``: read → ``BuildCorpus`` → write to
a staging directory), runs it on any runner (DirectRunner by default, others through
standard pipeline options), then publishes the snapshot::

    <out>/corpus/<snapshot_id>/corpus.parquet         CORPUS, best first
    <out>/corpus/<snapshot_id>/signature_map.parquet  signature -> canonical pin
    <out>/corpus/<snapshot_id>/manifest.json          parameters, counts, sha256 of files
    <out>/corpus/latest                               {"snapshot_id": ...}, os.replace'd

``snapshot_id`` = ``corpus-YYYYMMDD-<sha256 of parameters and content, 10 hex>``, so a
re-run over the same lake names the same snapshot. The staging directory must be on a
filesystem the workers and this process share (local disk on the DirectRunner).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.parquetio import ReadAllFromParquetBatched
from apache_beam.options.pipeline_options import PipelineOptions

from batch.corpus_steps import NAMESPACE, PIN_COLUMNS, BuildCorpus, CorpusConfig, CorpusError
from batch.pipeline_run import counter_results, run_to_end
from schemas.lake import partition_dir, partitions, table_dir
from schemas.lake_check import check_parquet_files, files_of
from towerline.core.files import publish_dir, sha256_file, write_json_atomic

__all__ = ["CorpusConfig", "CorpusError", "build_pipeline", "resolve_snapshot", "run_corpus"]

CORPUS_FILE, MAP_FILE, MANIFEST, LATEST = (
    "corpus.parquet",
    "signature_map.parquet",
    "manifest.json",
    "latest",
)
CORPUS = pa.schema(
    [
        pa.field("rank", pa.int32(), nullable=False),  # 1 = most engaged
        pa.field("pin_id", pa.int64(), nullable=False),
        pa.field("image_signature", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),  # decayed engagement at T_end
        pa.field("interest_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("interest_confidences", pa.list_(pa.float32()), nullable=False),
        pa.field("group_size", pa.int32(), nullable=False),  # engaged pins of its signature
    ]
)
SIGNATURE_MAP = pa.schema(
    [
        pa.field("image_signature", pa.string(), nullable=False),
        pa.field("canonical_pin_id", pa.int64(), nullable=False),
        pa.field("pin_ids", pa.list_(pa.int64()), nullable=False),  # canonical first
    ]
)
ENGAGED_COLUMNS = ["pin_id", "action", "event_ts"]  # what the job reads of engagements
ROW_GROUP = 65_536  # record batches of this size feed the index job's embedding step


def engagement_patterns(lake: Path, cfg: CorpusConfig) -> list[str]:
    """File globs of the engagement partitions inside the window."""
    days = [d for d in partitions(lake, "engagements") if cfg.first_day <= d <= cfg.day]
    if not days:
        raise CorpusError(f"no engagements partitions in {lake} from {cfg.first_day} to {cfg.day}")
    return [str(partition_dir(lake, "engagements", d) / "*.parquet") for d in days]


def split_outputs(top: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The job's top-M table (``corpus_steps.CANDIDATES``) -> (CORPUS, SIGNATURE_MAP)."""
    rank = pa.array(np.arange(1, top.num_rows + 1, dtype=np.int32))
    group = pc.list_value_length(top["pin_ids"]).cast(pa.int32())
    cols = [top[c] for c in ("pin_id", "image_signature", "score")]
    cols += [top["interest_ids"], top["interest_confidences"]]
    corpus = pa.Table.from_arrays([rank, *cols, group], schema=CORPUS)
    mapping = [top["image_signature"], top["pin_id"], top["pin_ids"]]
    return corpus, pa.Table.from_arrays(mapping, schema=SIGNATURE_MAP)


class WriteStaged(beam.DoFn):
    """The one top-M table -> corpus and signature map files in the staging directory."""

    def __init__(self, staging: str) -> None:
        self.staging = staging

    def process(self, top: pa.Table):
        corpus, mapping = split_outputs(top)
        pq.write_table(corpus, Path(self.staging) / CORPUS_FILE, row_group_size=ROW_GROUP)
        pq.write_table(mapping, Path(self.staging) / MAP_FILE, row_group_size=ROW_GROUP)
        yield corpus.num_rows


def build_pipeline(p: beam.Pipeline, lake: Path, cfg: CorpusConfig, staging: Path) -> None:
    """Read the window's engagements and the pins, build the corpus, write it to ``staging``."""
    pins_dir = table_dir(lake, "pins")
    if not pins_dir.is_dir():
        raise CorpusError(f"no pins table at {pins_dir}")
    # ReadAll: the window is a list of dt= partitions, one glob each, read as one source.
    engagements = (
        p
        | "EngagementPartitions" >> beam.Create(engagement_patterns(lake, cfg))
        | "ReadEngagements" >> ReadAllFromParquetBatched(columns=ENGAGED_COLUMNS)
    )
    # ReadAll here too: Beam's DaskRunner runs no `Read` source (ReadFromParquetBatched),
    # only Create and ParDos.
    pins = (
        p
        | "PinsFiles" >> beam.Create([str(pins_dir / "*.parquet")])
        | "ReadPins" >> ReadAllFromParquetBatched(columns=PIN_COLUMNS)
    )
    _ = (
        (engagements, pins)
        | "BuildCorpus" >> BuildCorpus(cfg)
        | "WriteStaged" >> beam.ParDo(WriteStaged(str(staging)))
    )


def run_corpus(
    lake: Path,
    cfg: CorpusConfig,
    out: Path | None = None,
    pipeline_args: list[str] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Build and publish the snapshot of ``cfg.day`` under ``<out or lake>/corpus``;
    returns its manifest. ``pipeline_args`` are standard Beam options (``--runner`` …)."""
    lake = Path(lake)
    check_inputs(lake, cfg)  # before any output directory exists
    root = Path(out or lake) / "corpus"
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    published = False
    try:
        pipeline = beam.Pipeline(options=PipelineOptions(pipeline_args or []))
        build_pipeline(pipeline, lake, cfg, staging)
        result = run_to_end(pipeline)  # Ctrl-C ends it at once (batch.interrupt)
        manifest = _publish(staging, root, cfg, counters(result), now or dt.datetime.now(dt.UTC))
        published = True
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after a rename; left by a failure
        if created and not published:
            with contextlib.suppress(OSError):
                root.rmdir()  # a first run that failed leaves no empty corpus/ behind


def check_inputs(lake: Path, cfg: CorpusConfig) -> None:
    """The window's engagement files and the pins files must be readable Parquet of the
    lake schema (``schemas.lake_check``); refuses naming the first bad file."""
    pins_dir = table_dir(lake, "pins")
    if not pins_dir.is_dir():
        raise CorpusError(f"no pins table at {pins_dir}")
    check_parquet_files(files_of(engagement_patterns(lake, cfg)), "engagements", ENGAGED_COLUMNS)
    check_parquet_files(files_of([str(pins_dir / "*.parquet")]), "pins", PIN_COLUMNS)


def counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The job's Beam counters, summed over steps (none where the runner reports no
    metrics: the DaskRunner)."""
    found = counter_results(result, NAMESPACE)
    totals: dict[str, int] = {}
    for counter in found:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + int(counter.result)
    return totals


def snapshot_id(cfg: CorpusConfig, corpus: pa.Table) -> str:
    """``corpus-YYYYMMDD-<10 hex>`` of the parameters, the ranked pins and their scores."""
    digest = hashlib.sha256(json.dumps(cfg.to_json(), sort_keys=True).encode())
    digest.update(corpus["pin_id"].to_numpy().tobytes())
    digest.update(corpus["score"].to_numpy().tobytes())
    return f"corpus-{cfg.day:%Y%m%d}-{digest.hexdigest()[:10]}"


def _publish(
    staging: Path, root: Path, cfg: CorpusConfig, counts: dict[str, int], now: dt.datetime
) -> dict[str, Any]:
    corpus = pq.read_table(staging / CORPUS_FILE, columns=["pin_id", "score"])
    if corpus.num_rows == 0:
        raise CorpusError(
            f"empty corpus: no engagement of a known pin from {cfg.first_day} to {cfg.day}"
        )
    manifest = {
        "snapshot_id": snapshot_id(cfg, corpus),
        **cfg.to_json(),
        "num_items": corpus.num_rows,
        "created_at": now.isoformat(),
        "counts": counts,
        "files": {name: sha256_file(staging / name) for name in (CORPUS_FILE, MAP_FILE)},
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    final = root / manifest["snapshot_id"]
    if final.is_dir():  # same parameters and content: the published copy stands
        manifest = json.loads((final / MANIFEST).read_text())
    else:
        final = publish_dir(staging, root, manifest["snapshot_id"])
    write_json_atomic(root / LATEST, {"snapshot_id": final.name, "created_at": now.isoformat()})
    return {**manifest, "path": str(final)}


def resolve_snapshot(path: Path) -> tuple[Path, dict[str, Any]]:
    """A snapshot directory, a ``corpus`` root or its parent (via ``latest``) -> (snapshot
    directory, its manifest), after checking the files against the manifest's sha256."""
    path = Path(path)
    for root in (path, path / "corpus"):
        if (root / LATEST).is_file():
            path = root / json.loads((root / LATEST).read_text())["snapshot_id"]
            break
    if not (path / MANIFEST).is_file():
        raise CorpusError(f"{path} is not a corpus snapshot (no {MANIFEST}, no {LATEST} pointer)")
    manifest = json.loads((path / MANIFEST).read_text())
    for name, expected in manifest["files"].items():
        if not (path / name).is_file() or sha256_file(path / name) != expected:
            raise CorpusError(
                f"snapshot {path.name}: {name} is missing or does not match its sha256"
            )
    return path, manifest
