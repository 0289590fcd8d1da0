"""The daily encode job: offsite history up to DATE -> cached user states of model vN.

Pipeline (Beam; every element is an Arrow table, never an event)::

    Create(partition globs) | ReadAllFromParquetBatched     one row group -> one table
      | EncodeUsers:  compact + spill by hash shard of user_id   one Arrow IPC file per
                                                             table, one batch per shard
                      GroupByKey(shard)                      only file references move
                      EncodeShardFn                          read its batches back, sort,
                                                             last L, encoder (fast path)
      | WriteShardFn                                         one Parquet file per shard

The events go through the shuffle on disk (``EncodeSpec.spill``, a directory every worker
sees, as the staging directory already is): a runner buffers a GroupByKey's whole input in
memory, which was the day's events, so the job's memory grew with the users. With the
spill it holds a few thousand references, and each worker one shard at a time.

``run_encode`` is the edge around it: lock and staging directory, the pipeline, a check
of the staged rows, the atomic publish of ``dt=DATE/<version>``, and only then the Feast
online write (read back from the published files). A failure anywhere before the publish
leaves the offline and online rows of earlier runs exactly as they were; see
``batch/encode_output.py`` for the swap.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import torch
from apache_beam.io.parquetio import ReadAllFromParquetBatched
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from batch import encode_ops as ops
from batch import encode_output as out
from batch.pipeline_run import counter_results, run_to_end
from model.artifacts import load_encoder
from model.lake_io import read_pins
from schemas.lake import LakeError, partition_dir, partitions

# Used only when the caller passes no pipeline options at all: two worker processes, one
# torch thread each (100k users under shared load: 1,008-1,238 users/s; in_memory 922-2,015
# depending on the load). multi_threading is refused below: on Beam 2.77 its FnApiRunner
# dropped 0.5-2% of the tables before the GroupByKey in 3 of 3 runs here (a 10-line
# Create | Reshuffle | FlatMap | GroupByKey pipeline reproduces it); the other modes never did.
DEFAULT_PIPELINE_ARGS = (
    "--runner=DirectRunner",
    "--direct_num_workers=2",
    "--direct_running_mode=multi_processing",
    # Workers otherwise log each bundle at INFO, and option warnings at WARNING, on the
    # terminal of a CLI user (the CLI shows its own errors as one line).
    "--default_sdk_harness_log_level=ERROR",
)
COUNTERS = "towerline.encode"


class InjectedFailure(RuntimeError):
    """Raised on purpose by ``WriteShardFn`` (tests of the failure guarantee)."""


@dataclasses.dataclass(frozen=True)
class EncodeSpec:
    """What each worker needs to encode a shard (small and picklable; the model and the
    pins are loaded from these paths once per worker, in ``DoFn.setup``)."""

    lake: str
    registry: str
    model_name: str
    version: str  # resolved, never "latest": every worker must load the same weights
    max_len: int  # L, the encoder's own max_len
    event_ms: int  # event_timestamp of every row, ms since the epoch (UTC)
    batch_size: int = 256
    threads: int = 1  # torch intra-op threads per worker
    # Directory for the shuffled events (``encode_ops.spill_by_shard``); None sends the
    # tables themselves through the GroupByKey (memory grows with the day).
    spill: str | None = None


class EncodeShardFn(beam.DoFn):
    """(shard, COMPACT tables or their ``SpilledPart``s) -> (shard, USER_HISTORY_STATE
    table of its users)."""

    def __init__(self, spec: EncodeSpec) -> None:
        self.spec = spec
        self.users = Metrics.counter(COUNTERS, "users")
        self.events = Metrics.counter(COUNTERS, "events")
        self.shards = Metrics.counter(COUNTERS, "shards")

    def setup(self) -> None:
        # Deliberate: one intra-op thread per worker; parallelism comes from the workers
        # (OpenMP threads on these shared 2-core machines were measured slower).
        torch.set_num_threads(self.spec.threads)
        spec = self.spec
        self.encoder = load_encoder(Path(spec.registry), spec.version, spec.model_name)
        self.pins = read_pins(Path(spec.lake))

    def process(self, element: tuple[int, Iterable[pa.Table]]) -> Iterator[tuple[int, pa.Table]]:
        shard, grouped = element
        parts = ops.load_parts(grouped)
        states = ops.encode_shard(
            parts,
            self.encoder,
            self.pins,
            version=self.spec.version,
            event_ms=self.spec.event_ms,
            max_len=self.spec.max_len,
            batch_size=self.spec.batch_size,
        )
        self.events.inc(sum(t.num_rows for t in parts))
        self.users.inc(states.num_rows)
        self.shards.inc()
        yield shard, states


class EncodeUsers(beam.PTransform):
    """PCollection[lake row-group tables] -> PCollection[(shard, state table)].

    No I/O but the worker's one-time model load and, with ``spec.spill``, the spilled
    events (written and read back in that directory); ``shards`` sets how many groups the
    users are split into (each is sorted and encoded in one go, so a shard should hold
    thousands of users; more shards than workers keeps both cores busy)."""

    def __init__(self, spec: EncodeSpec, shards: int) -> None:
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.spec, self.shards = spec, shards

    def expand(self, tables: beam.PCollection) -> beam.PCollection:
        shards, spill = self.shards, self.spec.spill
        if spill is None:
            split = beam.FlatMap(_compact_and_split, shards)
        else:
            split = beam.FlatMap(_compact_and_spill, shards, spill)
        return (
            tables
            | "CompactAndShard" >> split
            | "GroupByShard" >> beam.GroupByKey()
            | "EncodeShard" >> beam.ParDo(EncodeShardFn(self.spec))
        )


def _compact_and_split(table: pa.Table, shards: int) -> Iterator[tuple[int, pa.Table]]:
    return ops.split_by_shard(ops.compact_events(table), shards)


def _compact_and_spill(
    table: pa.Table, shards: int, spill: str
) -> Iterator[tuple[int, ops.SpilledPart]]:
    return ops.spill_by_shard(ops.compact_events(table), shards, spill)


class WriteShardFn(beam.DoFn):
    """Writes each shard's states into the staging directory; yields (shard, rows).

    ``fail_after`` raises ``InjectedFailure`` once that many shards were written by this
    DoFn instance: a job that dies midway, with part of its output staged."""

    def __init__(self, staging: str, fail_after: int | None = None) -> None:
        self.staging, self.fail_after = staging, fail_after
        self.written = 0

    def process(self, element: tuple[int, pa.Table]) -> Iterator[tuple[int, int]]:
        if self.fail_after is not None and self.written >= self.fail_after:
            raise InjectedFailure(f"injected failure after {self.written} shards")
        shard, states = element
        out.write_part(Path(self.staging), shard, states)
        self.written += 1
        yield shard, states.num_rows


def offsite_globs(lake: Path, day: dt.date, lookback_days: int | None = None) -> list[str]:
    """One file glob per offsite partition up to ``day`` (and within ``lookback_days``)."""
    first = dt.date.min if lookback_days is None else day - dt.timedelta(days=lookback_days - 1)
    days = [d for d in partitions(lake, "offsite_conversions") if first <= d <= day]
    if not days:
        raise LakeError(f"no offsite_conversions partitions in {lake} up to {day}")
    return [str(partition_dir(lake, "offsite_conversions", d) / "*.parquet") for d in days]


def build_pipeline(
    p: beam.Pipeline,
    spec: EncodeSpec,
    globs: Sequence[str],
    staging: Path,
    shards: int,
    fail_after: int | None = None,
) -> beam.PCollection:
    """Read the offsite partitions, encode, stage one file per shard; (shard, rows) out.

    ReadAll over explicit partition globs rather than ReadFromParquetBatched over one
    pattern: the job must stop at DATE, and later partitions may already exist."""
    return (
        p
        | "OffsitePartitions" >> beam.Create(list(globs))
        | "ReadOffsite" >> ReadAllFromParquetBatched(columns=ops.EVENT_COLUMNS)
        | "EncodeUsers" >> EncodeUsers(spec, shards)
        | "WriteStaging" >> beam.ParDo(WriteShardFn(str(staging), fail_after))
    )


def pipeline_options(argv: Sequence[str] | None) -> PipelineOptions:
    """Beam options from the arguments after ``--``; none at all -> DEFAULT_PIPELINE_ARGS.

    Refuses the DirectRunner's multi_threading mode with more than one worker, which
    loses elements on this Beam version (see DEFAULT_PIPELINE_ARGS)."""
    options = PipelineOptions(list(argv) if argv else list(DEFAULT_PIPELINE_ARGS))
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_threading" and direct.direct_num_workers != 1:
        raise ValueError(
            "--direct_running_mode=multi_threading loses elements on Beam 2.77; "
            "use multi_processing (the default) or in_memory"
        )
    return options


def run_pipeline(
    spec: EncodeSpec,
    globs: Sequence[str],
    staging: Path,
    shards: int,
    argv: Sequence[str] | None = None,
    fail_after: int | None = None,
) -> dict[str, int]:
    """Run the pipeline to completion; returns its committed counters (users, events,
    shards), or no entry for a counter the runner does not report (the DaskRunner
    reports none)."""
    p = beam.Pipeline(options=pipeline_options(argv))
    build_pipeline(p, spec, globs, staging, shards, fail_after)
    result = run_to_end(p)  # Ctrl-C ends it at once (batch.interrupt)
    return {c.key.metric.name: int(c.committed or 0) for c in counter_results(result, COUNTERS)}
