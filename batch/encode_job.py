"""``run_encode``: the daily encode job from its config to published, online states.

Order, and what a failure at each step leaves behind:

0. the input files' Parquet footers match the lake schema (``schemas.lake_check``)
                                                fails: nothing written, the file named
1. lock (DATE, version); repair what a crashed run left (``encode_output.recover``);
   refuse a day another model's states hold (states are keyed by version only)
2. Beam pipeline -> staging directory          fails: staging deleted, nothing else touched
   (events shuffled through a spill directory,  deleted when the pipeline ends, either way)
3. check: every lake event was read (footers),  fails: same
   the staged rows match the counter, one per user
4. publish ``dt=DATE/<version>`` (rename swap,  the only step that changes the offline table
   with ``_manifest.json`` naming the model)
5. Feast online write, from the published files fails: offline is today's, online holds a
   mix of today's and older rows; a rerun (idempotent) completes it.

The online write comes after the publish so that a failed pipeline never touches online
rows, and it reads the published files so online and offline hold the same values.
Ctrl-C stops the Beam workers at once (``batch.interrupt``) and ends in
``EncodeInterrupted`` (exit 130), whose message says whether the day was published.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import feast

from batch import encode_output as out
from batch.encode import EncodeSpec, offsite_globs, run_pipeline
from batch.encode_ops import EVENT_COLUMNS, end_of_day_ms
from schemas.arrow import PIN_PROFILE
from schemas.lake import table_dir
from schemas.lake_check import check_parquet_files, files_of
from towerline.core.contracts import DEFAULT_MODEL_NAME
from towerline.core.errors import EXIT_INTERRUPTED, TowerlineError
from towerline.core.featurestore import write_online


class EncodeInterrupted(TowerlineError):
    """Ctrl-C stopped the job; the message says what was published. A TowerlineError, not a
    KeyboardInterrupt, so the CLI prints it as one line (exit 130)."""

    exit_code = EXIT_INTERRUPTED


@dataclasses.dataclass(frozen=True)
class EncodeConfig:
    """One run of the daily encode job (frozen; built by the CLI or a test)."""

    lake: Path
    day: dt.date  # DATE: history up to and including this dt partition
    registry: Path
    version: str | None = None  # None / "latest" = the newest registered version
    model_name: str = DEFAULT_MODEL_NAME
    shards: int = 64
    batch_size: int = 256  # users per encoder call
    threads: int = 1  # torch threads per Beam worker
    lookback_days: int | None = None  # None: every partition up to DATE
    event_time: dt.datetime | None = None  # None: the midnight (UTC) that ends DATE
    online_batch_size: int = 10_000
    progress: bool = True
    progress_interval_s: float = 5.0
    fail_after_shards: int | None = None  # test hook: WriteShardFn raises after N shards


def resolve_spec(cfg: EncodeConfig) -> EncodeSpec:
    """Pin the model version and the event time once, before any worker starts."""
    from model.artifacts import load_config

    version, model_cfg = load_config(Path(cfg.registry), cfg.version, cfg.model_name)
    if cfg.event_time is None:
        event_ms = end_of_day_ms(cfg.day)
    else:
        if cfg.event_time.tzinfo is None:
            raise ValueError("event_time must be timezone-aware")
        event_ms = int(cfg.event_time.timestamp() * 1000)
    return EncodeSpec(
        lake=str(Path(cfg.lake).resolve()),
        registry=str(Path(cfg.registry).resolve()),
        model_name=cfg.model_name,
        version=version,
        max_len=model_cfg.max_len,
        event_ms=event_ms,
        batch_size=cfg.batch_size,
        threads=cfg.threads,
    )


def check_inputs(lake: Path, globs: Sequence[str]) -> None:
    """The offsite files the pipeline reads and the pins every worker loads must be
    readable Parquet of the lake schema (``schemas.lake_check``)."""
    check_parquet_files(files_of(globs), "offsite_conversions", EVENT_COLUMNS)
    pins = files_of([str(table_dir(lake, "pins") / "*.parquet")])
    check_parquet_files(pins, "pins", PIN_PROFILE.names)


def run_encode(
    cfg: EncodeConfig,
    pipeline_args: Sequence[str] | None = None,
    store: feast.FeatureStore | None = None,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Encode DATE with one model version; publish offline; write online unless ``store``
    is None. Returns a JSON-able summary (rows, phase seconds, users/s)."""
    log = log or sys.stderr
    spec = resolve_spec(cfg)
    globs = offsite_globs(Path(cfg.lake), cfg.day, cfg.lookback_days)
    check_inputs(Path(cfg.lake), globs)  # before the lock and staging dirs exist
    paths = out.OutputPaths.of(Path(cfg.lake), cfg.day, spec.version)
    spec = dataclasses.replace(spec, spill=str(paths.spill))
    start = time.perf_counter()
    with out.exclusive(paths):
        out.recover(paths)
        _refuse_other_models_states(paths, cfg.model_name)
        try:
            try:
                counts = _encode_to_staging(cfg, spec, globs, paths, pipeline_args, log)
            finally:
                shutil.rmtree(paths.spill, ignore_errors=True)  # disk: ~25 B an event
            out.verify_events(counts.get("events"), out.source_rows(globs))
            rows = out.verify_staging(paths.staging, counts.get("users"))
            out.write_manifest(paths.staging, _manifest(cfg, spec, rows))
            out.publish(paths)
        except KeyboardInterrupt:
            out.recover(paths)  # a swap caught between its two renames is put back now
            raise EncodeInterrupted(
                f"interrupted: the encode of dt={cfg.day} {spec.version} stopped before "
                f"publishing; {paths.final.parent} was left as it was"
            ) from None
        finally:
            shutil.rmtree(paths.staging, ignore_errors=True)  # a failed run leaves nothing
        offline_s = time.perf_counter() - start
        try:
            online = _write_online(store, cfg, paths, spec.version, log)
        except KeyboardInterrupt:
            raise EncodeInterrupted(
                f"interrupted during the online write: {paths.final} is published, the "
                "online store holds part of it; rerun the same command to complete it"
            ) from None
    total_s = time.perf_counter() - start
    return {
        "dt": cfg.day.isoformat(),
        "model_version": spec.version,
        "partitions": len(globs),
        "rows": rows,
        # None where the runner reports no counters (the DaskRunner), never a false 0.
        "events": counts.get("events"),
        "shards": counts.get("shards"),
        "offline_path": str(paths.final),
        "offline_s": round(offline_s, 3),
        "users_per_s": round(rows / offline_s, 1) if offline_s else None,
        **online,
        "total_s": round(total_s, 3),
    }


def _refuse_other_models_states(paths: out.OutputPaths, model_name: str) -> None:
    """States are keyed by version alone (offline and online): replacing another model's
    states of the same version and day would hand them to that model's serving."""
    written_by = (out.read_manifest(paths.final) or {}).get("model_name", model_name)
    if written_by != model_name:
        raise out.EncodeOutputError(
            f"{paths.final} holds the states of model {written_by!r}, not {model_name!r}; "
            "give each model its own lake (states are keyed by version only)"
        )


def _manifest(cfg: EncodeConfig, spec: EncodeSpec, rows: int) -> dict[str, Any]:
    """Who wrote a day's states (``encode_output.STATE_MANIFEST``); no clock in it, so a
    rerun writes an identical file."""
    from model.registry import verify_version

    files = verify_version(Path(cfg.registry), cfg.model_name, spec.version)["files"]
    return {
        "model_name": cfg.model_name,
        "model_version": spec.version,
        "dt": cfg.day.isoformat(),
        "rows": rows,
        "encoder_sha256": files.get("encoder.pt"),
    }


def _encode_to_staging(
    cfg: EncodeConfig,
    spec: EncodeSpec,
    globs: Sequence[str],
    paths: out.OutputPaths,
    pipeline_args: Sequence[str] | None,
    log: TextIO,
) -> dict[str, int]:
    print(f"encode {spec.version} dt={cfg.day}: {len(globs)} offsite partitions", file=log)
    monitor = out.StagingProgress(paths.staging, cfg.shards, cfg.progress_interval_s, log)
    if cfg.progress:
        monitor.start()
    try:
        return run_pipeline(
            spec, globs, paths.staging, cfg.shards, pipeline_args, cfg.fail_after_shards
        )
    finally:
        if cfg.progress:
            monitor.stop()


def _write_online(
    store: feast.FeatureStore | None,
    cfg: EncodeConfig,
    paths: out.OutputPaths,
    version: str,
    log: TextIO,
) -> dict[str, Any]:
    """Write the published rows to the online store, unless there is none or a later day
    of this version is already published (a backfill must not replace fresher states)."""
    if store is None:
        return {"online_rows": 0, "online": "skipped: no online store"}
    newer = out.newer_partitions(Path(cfg.lake), cfg.day, version)
    if newer:
        return {"online_rows": 0, "online": f"skipped: dt={newer[-1]} is newer"}
    table = out.read_published(paths)
    start = time.perf_counter()
    report = out.OnlineProgress(table.num_rows, log, cfg.progress_interval_s)
    written = write_online(
        store, out.STATE_TABLE, table, cfg.online_batch_size, report if cfg.progress else None
    )
    seconds = time.perf_counter() - start
    return {"online_rows": written, "online": "written", "online_s": round(seconds, 3)}
