"""`towerline daily`: the day's chain for the live version, every step idempotent and resumable.

    corpus snapshot of D ─ encode states of D for V ─ index of V over that snapshot ─ publish

V is the version ``serving.json`` names. Before it runs, each step asks whether its output
for (D, V, its inputs) already exists and is intact, and skips itself if so:

- corpus: a snapshot of D built with the same parameters, its files matching their sha256;
- encode: ``dt=D/V/`` published with its ``_manifest.json`` (this model, V's encoder, as many
  rows as its files hold), and the ledger's last run of (batch encode, D, V) a success that
  ended after those files were written: the online write finished too;
- index: an intact build of V's item tower over that snapshot (``batch.index.find_build``);
  with ``shards`` > 1, a whole intact set of that many shards (``batch.index_shards``);
- publish: ``serving.json`` already names that build.

So a rerun of a finished day builds nothing and moves no pointer, and a day killed midway
resumes at its first unfinished step. Each step that runs records itself in the ledger under
its own job name; the chain records a ``daily`` run with what it ran and what it skipped.
One chain per model at a time: a lock file beside ``serving.json``.

Cadence: before the chain, a retrain (``batch.retrain``) runs when ``retrain_every_days``
passed since the last retrain the ledger records (or, before any, since the last day the
live version's data reaches). Its roll-out is this same chain for N+1 (states of D, index,
publish), so the day's chain that follows finds N+1's outputs and skips them. A failed gate,
or a retrain that fails outright, leaves N live and the chain runs for N.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import feast
import pyarrow.parquet as pq

from batch import encode_output as out
from batch.corpus import CorpusError, resolve_snapshot, run_corpus
from batch.corpus_steps import CorpusConfig
from batch.encode_job import EncodeConfig, run_encode
from batch.index import find_build, version_facts
from batch.index_shards import index_job
from batch.publish import publish
from batch.retrain import (
    RetrainConfig,
    RetrainOptions,
    due,
    last_retrain,
    model_day,
    report_path,
    run_retrain,
)
from model.registry import verify_version
from towerline.core import ledger
from towerline.core.ann import SERVING, HnswParams, model_root, read_pointer
from towerline.core.contracts import DEFAULT_MODEL_NAME
from towerline.core.errors import RefusedError
from towerline.core.names import version_problem

STEPS = ("corpus", "encode", "index", "publish")
JOB_OF = {
    "corpus": "batch corpus",
    "encode": "batch encode",
    "index": "batch index",
    "publish": "publish",
}
RAN, SKIPPED = "ran", "skipped"
LOCK = ".lock-daily"
Result = dict[str, Any]


class DailyError(RefusedError):
    """The chain cannot start: nothing is live, or another chain of the model runs."""


@dataclasses.dataclass(frozen=True)
class DailyConfig:
    """One day's chain (frozen; built by the CLI or a test)."""

    day: dt.date
    lake: Path
    registry: Path
    indexes: Path
    ledger: Path  # read to resume, appended to by every step that runs
    model_name: str = DEFAULT_MODEL_NAME
    half_life_days: float = 7.0
    top_m: int = 1_000_000
    corpus_out: Path | None = None  # snapshots under <corpus_out or lake>/corpus
    hnsw: HnswParams = dataclasses.field(default_factory=HnswParams)
    calibrate: bool = True
    keep: int = 3
    shards: int = 1  # > 1: the index is a set of this many pin-id hash shards
    threads: int = -1
    pipeline_args: tuple[str, ...] = ()
    progress: bool = True
    retrain_every_days: int | None = None  # the cadence; None: never retrain here
    retrain: RetrainOptions = dataclasses.field(default_factory=RetrainOptions)

    def retrain_config(self) -> RetrainConfig:
        """`towerline retrain --until D` for this day, model and stores."""
        return RetrainConfig(
            until=self.day,
            lake=Path(self.lake),
            registry=Path(self.registry),
            indexes=Path(self.indexes),
            ledger=self.ledger,
            model_name=self.model_name,
            options=self.retrain,
            progress=self.progress,
        )

    def corpus_config(self) -> CorpusConfig:
        return CorpusConfig(self.day, self.half_life_days, top_m=self.top_m)

    def encode_config(self, version: str) -> EncodeConfig:
        return EncodeConfig(
            lake=Path(self.lake),
            day=self.day,
            registry=Path(self.registry),
            version=version,
            model_name=self.model_name,
            progress=self.progress,
        )

    @property
    def serving(self) -> Path:
        return model_root(self.indexes, self.model_name) / SERVING


# --- pure decisions -----------------------------------------------------------------------


def live_version(pointer: dict[str, Any] | None, where: Path) -> str:
    """The version ``serving.json`` (read from ``where``) names; refuses when none."""
    version = (pointer or {}).get("model_version")
    if not isinstance(version, str) or version_problem(version):
        raise DailyError(
            f"nothing is published yet ({where} names no live version): run "
            "train/encode/index/publish first, or the demo"
        )
    return version


def same_corpus(manifest: dict[str, Any], cfg: CorpusConfig) -> bool:
    """The snapshot ``manifest`` was built with ``cfg``'s parameters (as JSON compares)."""
    wanted = json.loads(json.dumps(cfg.to_json()))
    return all(manifest.get(k) == v for k, v in wanted.items())


def states_done(
    manifest: dict[str, Any] | None,
    file_rows: int,
    written_at: float,
    expected: dict[str, Any],
    last_run: ledger.RunRecord | None,
) -> bool:
    """A day's states are complete: the manifest names ``expected`` (model, version, day,
    encoder) and the files' rows, and the last encode run of the day succeeded after the
    files were written (a run killed during its online write leaves offline files and no
    success, or a success older than them)."""
    return (
        manifest is not None
        and all(manifest.get(k) == v for k, v in expected.items())
        and manifest.get("rows") == file_rows
        and last_run is not None
        and last_run.outcome == ledger.SUCCESS
        and last_run.finished_at.timestamp() >= written_at
    )


def serves(pointer: dict[str, Any] | None, version: str, build: str) -> bool:
    return bool(pointer) and (pointer["model_version"], pointer.get("dir")) == (version, build)


# --- what exists already (None: the step must run) ----------------------------------------


def find_snapshot(cfg: DailyConfig) -> Result | None:
    """The newest intact snapshot of the day built with the same parameters."""
    root = Path(cfg.corpus_out or cfg.lake) / "corpus"
    found = []
    for path in sorted(root.glob(f"corpus-{cfg.day:%Y%m%d}-*")) if root.is_dir() else []:
        try:
            snapshot, manifest = resolve_snapshot(path)
        except (CorpusError, OSError, ValueError):
            continue  # damaged: the corpus step builds the day again
        if same_corpus(manifest, cfg.corpus_config()):
            found.append({**manifest, "path": str(snapshot)})
    return max(found, key=lambda m: m["created_at"], default=None)


def find_states(cfg: DailyConfig, version: str) -> Result | None:
    """The published, complete states of (D, V), as ``run_encode`` summarises them."""
    paths = out.OutputPaths.of(Path(cfg.lake), cfg.day, version)
    try:
        manifest = out.read_manifest(paths.final)
        rows = sum(pq.read_metadata(f).num_rows for f in paths.final.glob(out.PART_GLOB))
        written_at = (paths.final / out.STATE_MANIFEST).stat().st_mtime
    except (out.EncodeOutputError, OSError, ValueError):
        return None  # absent or damaged: encoding again rewrites the day
    files = verify_version(Path(cfg.registry), cfg.model_name, version)["files"]
    expected = {"model_name": cfg.model_name, "model_version": version}
    expected |= {"dt": cfg.day.isoformat(), "encoder_sha256": files.get("encoder.pt")}
    last_run = ledger.last(
        ledger.read(cfg.ledger),
        job="batch encode",
        outcome=None,
        partition=cfg.day,
        model_name=cfg.model_name,
        model_version=version,
    )
    if not states_done(manifest, rows, written_at, expected, last_run):
        return None
    return {"model_version": version, "rows": rows, "offline_path": str(paths.final)}


def find_index(cfg: DailyConfig, version: str, snapshot_id: str, now: dt.datetime) -> Result | None:
    facts, _ = version_facts(Path(cfg.registry), version, cfg.model_name, snapshot_id, now)
    found = find_build(Path(cfg.indexes), facts, cfg.hnsw, cfg.calibrate, cfg.shards)
    return None if found is None else {**found[1], "path": str(found[0]), "reused": True}


def find_pointer(cfg: DailyConfig, version: str, build: Path) -> Result | None:
    pointer = read_pointer(cfg.serving)
    return pointer if serves(pointer, version, build.name) else None


# --- the chain ----------------------------------------------------------------------------


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the model's daily lock; refuse at once when another chain holds it."""
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DailyError(f"another daily run of this model holds {path}") from exc
        yield


def run_chain(
    cfg: DailyConfig,
    version: str,
    store: feast.FeatureStore,
    log: TextIO,
    clock: Callable[[], dt.datetime] = ledger.utc_now,
) -> Result:
    """Day D's four steps for ``version``, each skipped when its output exists; returns
    {snapshot_id, states, build, steps: [{step, status, seconds}]}."""
    rows: list[dict[str, Any]] = []
    args = list(cfg.pipeline_args)

    def step(name: str, find: Callable[[], Result | None], make: Callable[[], Result]) -> Result:
        begun = time.monotonic()
        result, status = find(), SKIPPED
        if result is None:
            result, status = _recorded(cfg, name, version, make), RAN
        rows.append({"step": name, "status": status, "seconds": round(time.monotonic() - begun, 3)})
        print(f"daily {cfg.day} {version}: {name} {status}", file=log, flush=True)
        return result

    corpus = step(
        "corpus",
        lambda: find_snapshot(cfg),
        lambda: run_corpus(Path(cfg.lake), cfg.corpus_config(), cfg.corpus_out, args, clock()),
    )
    encode = cfg.encode_config(version)
    states = step(
        "encode",
        lambda: find_states(cfg, version),
        lambda: run_encode(encode, pipeline_args=args, store=store, log=log),
    )
    index = step(
        "index",
        lambda: find_index(cfg, version, corpus["snapshot_id"], clock()),
        lambda: _index(cfg, version, Path(corpus["path"]), args, clock()),
    )
    build = Path(index["path"])
    step(
        "publish",
        lambda: find_pointer(cfg, version, build),
        lambda: _publish(cfg, version, build, store, clock()),
    )
    return {
        "model_version": version,
        "snapshot_id": corpus["snapshot_id"],
        "states": states["offline_path"],
        "build": build,
        "steps": rows,
    }


def retrain_now(
    cfg: DailyConfig,
    store: feast.FeatureStore,
    log: TextIO | None = None,
    clock: Callable[[], dt.datetime] = ledger.utc_now,
) -> Result:
    """`towerline retrain --until D`: under the model's daily lock, train and gate N+1;
    on a pass its day chain (states of D, index, publish) is the roll-out."""
    log = log or sys.stderr
    with exclusive(model_root(cfg.indexes, cfg.model_name) / LOCK):
        return _retrain(cfg, store, log, clock)


def _retrain(
    cfg: DailyConfig, store: feast.FeatureStore, log: TextIO, clock: Callable[[], dt.datetime]
) -> Result:
    def rollout(candidate: str) -> Result:
        chain = run_chain(cfg, candidate, store, log, clock)
        return {**chain, "build": chain["build"].name}

    return run_retrain(cfg.retrain_config(), rollout, log, clock)


def retrain_due(cfg: DailyConfig, version: str) -> tuple[bool, str]:
    """The cadence: due when ``retrain_every_days`` or more passed since the last retrain
    in the ledger, or (none yet) since the last day the live version's data reaches."""
    last = last_retrain(cfg.ledger, cfg.model_name)
    since = last or model_day(Path(cfg.registry), cfg.model_name, version)
    return due(cfg.day, since, cfg.retrain_every_days)


def run_daily(
    cfg: DailyConfig,
    store: feast.FeatureStore,
    log: TextIO | None = None,
    clock: Callable[[], dt.datetime] = ledger.utc_now,
) -> Result:
    """Run (or resume, or confirm) day D's chain for the live version, after a retrain when
    the cadence says one is due; returns a summary: {dt, model_name, model_version,
    snapshot_id, states, states_partition, build, index_dir, steps: [{step, status
    ran|skipped, seconds}], ran, skipped, retrain: {due, why, decision?, candidate?,
    served_before?, error?}, seconds}.

    A retrain that fails its gate, or fails outright, does not stop the day: the chain runs
    for the version still live, and ``retrain.error`` says what went wrong."""
    log = log or sys.stderr
    version = live_version(read_pointer(cfg.serving), cfg.serving)
    started = time.monotonic()
    with exclusive(model_root(cfg.indexes, cfg.model_name) / LOCK):
        is_due, why = retrain_due(cfg, version)
        retrain: Result = {"due": is_due, "why": why}
        print(
            f"daily {cfg.day} {version}: retrain {'due' if is_due else 'not due'}: {why}", file=log
        )
        if is_due:
            retrain["served_before"] = version
            try:
                report = _retrain(cfg, store, log, clock)
                retrain |= {
                    "decision": report["decision"],
                    "candidate": report["candidate"]["version"],
                }
                retrain["report"] = str(
                    report_path(cfg.retrain_config(), report["candidate"]["version"])
                )
            except Exception as exc:  # the day's chain for the live version must still run
                retrain["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                print(f"daily {cfg.day}: retrain failed: {retrain['error']}", file=log)
            version = live_version(read_pointer(cfg.serving), cfg.serving)
        with ledger.Run(
            cfg.ledger, "daily", partition=cfg.day, model_name=cfg.model_name, model_version=version
        ) as daily:
            chain = run_chain(cfg, version, store, log, clock)
            build = chain["build"]
            steps = {r["step"]: r["status"] for r in chain["steps"]}
            more = {"retrain": retrain.get("decision", "failed" if "error" in retrain else None)}
            more = more if is_due else {}
            daily.succeeded(output=build, steps=steps, snapshot_id=chain["snapshot_id"], **more)
    return {
        "dt": cfg.day.isoformat(),
        "model_name": cfg.model_name,
        "model_version": version,
        "snapshot_id": chain["snapshot_id"],
        "states": chain["states"],
        "states_partition": f"dt={cfg.day.isoformat()}/{version}",
        "build": build.name,
        "index_dir": str(build),
        "steps": chain["steps"],
        "ran": [name for name, status in steps.items() if status == RAN],
        "skipped": [name for name, status in steps.items() if status == SKIPPED],
        "retrain": retrain,
        "seconds": round(time.monotonic() - started, 3),
    }


def _index(
    cfg: DailyConfig, version: str, snapshot: Path, args: list[str], now: dt.datetime
) -> Result:
    return index_job(cfg.shards)(
        snapshot,
        Path(cfg.registry),
        version,
        Path(cfg.indexes),
        cfg.hnsw,
        calibrate=cfg.calibrate,
        model_name=cfg.model_name,
        keep=cfg.keep,
        threads=cfg.threads,
        pipeline_args=args,
        now=now,
        reuse=True,
    )


def _publish(
    cfg: DailyConfig, version: str, build: Path, store: feast.FeatureStore, now: dt.datetime
) -> Result:
    registry, indexes, lake = Path(cfg.registry), Path(cfg.indexes), Path(cfg.lake)
    return publish(
        version, registry, indexes, lake, store, cfg.model_name, now=now, index_dir=build.name
    )


def _recorded(cfg: DailyConfig, name: str, version: str, make: Callable[[], Result]) -> Result:
    """Run one step inside its own ledger record (success, or failure with its error)."""
    job = JOB_OF[name]
    model = {} if name == "corpus" else {"model_name": cfg.model_name, "model_version": version}
    with ledger.Run(cfg.ledger, job, partition=cfg.day, **model) as run:
        result = make()
        more = {"output": cfg.serving} if name == "publish" else {}
        run.succeeded(**ledger.facts(job, result, **more))
    return result
