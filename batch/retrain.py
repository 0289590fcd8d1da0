"""`towerline retrain --until D`: train N+1, gate it against the live N, roll it out or reject it.

    held-out window H = the ``holdout_days`` days ending at D
    train N+1 on the newest window ending the day before H (N's recipe: architecture,
      training config, window length)
    evaluate N and N+1 on the SAME targets: per user the last offsite event, when it falls
      in H (``model.protocol.held_out_targets``); neither version trained on them
    gate (``batch.gate``): N+1 not worse than N by more than the margin on each checked metric
      passed  -> ``rollout(N+1)``: the day's chain for N+1 (states of D beside N's, index,
                 publish); serving follows through its version sync
      failed  -> N stays live, N+1 is marked rejected in the registry ("latest" never picks it)
    report: ``REGISTRY/<model>/gate/<N+1>.json`` (kept when the candidate is pruned)
    retire: the registry keeps ``keep_versions`` (rejected candidates go first); index builds
      and offline states of versions it no longer holds are deleted; never the live or the
      previous version (``pinned.json``, ``serving.json``).

A live version that trained on the held-out window is refused: comparing it there would
flatter it. The run records itself in the ledger as ``retrain`` (partition D, the candidate,
gate metrics, decision); the steps of the roll-out record themselves under their own jobs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from batch.encode_output import read_manifest
from batch.gate import GateConfig, decide
from model import registry as reg
from model.artifacts import load_model, save_model
from model.batches import make_source
from model.config import ModelConfig, TrainConfig
from model.evaluate import evaluate_targets, state_share
from model.lake_io import LakeData, Window, load_lake, read_users
from model.protocol import held_out_targets, popularity_scores
from model.train import train_model
from schemas.lake import partition_dir, partitions
from towerline.core import contracts, ledger
from towerline.core.ann import SERVING, list_indexes, model_root, read_pointer
from towerline.core.ann.store import pinned_dirs
from towerline.core.contracts import DEFAULT_MODEL_NAME
from towerline.core.errors import RefusedError
from towerline.core.files import write_json_atomic
from towerline.core.names import version_problem

DAY = dt.timedelta(days=1)
REPORTS = "gate"
PASSED, REJECTED, PUBLISHED = "passed", "rejected", "published"
Result = dict[str, Any]


class RetrainError(RefusedError):
    """The retrain cannot run fairly or at all; nothing was published."""


@dataclasses.dataclass(frozen=True)
class RetrainOptions:
    """What `towerline retrain` and the daily cadence share (frozen)."""

    holdout_days: int = 1  # the held-out window: the last days up to D
    train_days: int | None = None  # None: as long as the live version's window, else all
    epochs: int | None = None  # None: the live version's
    seed: int | None = None  # None: the live version's
    gate: GateConfig = dataclasses.field(default_factory=GateConfig)
    keep_versions: int = 3  # versions kept servable (model, index, states); pinned ones too
    gate_users: int = 20_000  # held-out users sampled for the gate
    threads: int = 1
    # Test hook: permute the training events' pins with this seed, so the candidate learns
    # labels that mean nothing and the gate must reject it.
    shuffle_labels_seed: int | None = None

    def __post_init__(self) -> None:
        if self.holdout_days < 1 or self.keep_versions < 2 or self.gate_users < 1:
            raise ValueError("need holdout_days >= 1, keep_versions >= 2, gate_users >= 1")


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    until: dt.date
    lake: Path
    registry: Path
    indexes: Path
    ledger: Path | None
    model_name: str = DEFAULT_MODEL_NAME
    options: RetrainOptions = dataclasses.field(default_factory=RetrainOptions)
    progress: bool = True

    @property
    def held_out(self) -> Window:
        return Window(self.until - (self.options.holdout_days - 1) * DAY, self.until)


# --- pure decisions -----------------------------------------------------------------------


def due(day: dt.date, since: dt.date, every_days: int | None) -> tuple[bool, str]:
    """Whether day ``day`` retrains: ``every_days`` or more since ``since`` (the last
    retrain, or the live model's data when none ran). ``every_days`` None: never."""
    if every_days is None:
        return False, "retraining is off"
    age = (day - since).days
    if age >= every_days:
        return True, f"{age} days since {since} (every {every_days})"
    return False, f"{age} days since {since}, next at {every_days}"


def train_window(held_out: Window, days: int | None, first: dt.date) -> Window:
    """The newest ``days`` days ending the day before ``held_out`` (all since ``first``)."""
    end = held_out.start - DAY
    start = first if days is None else max(first, end - (days - 1) * DAY)
    if start > end:
        raise RetrainError(f"no lake day before the held-out window {held_out.start} to train on")
    return Window(start, end)


def window_days(doc: dict[str, Any]) -> int | None:
    try:
        window = Window.from_json(doc)
    except (KeyError, TypeError, ValueError):
        return None
    return (window.end - window.start).days + 1


# --- reading what is live -----------------------------------------------------------------


def live_version(indexes: Path, model_name: str) -> str:
    path = model_root(indexes, model_name) / SERVING
    version = (read_pointer(path) or {}).get("model_version")
    if not isinstance(version, str) or version_problem(version):
        raise RetrainError(f"nothing is published yet ({path} names no live version)")
    return version


def model_day(registry: Path, model_name: str, version: str) -> dt.date:
    """The newest day a version's data reaches: its training window's end, else the day it
    was registered (a version saved without a window)."""
    window = reg.load_document(registry, model_name, version, "window")
    try:
        return Window.from_json(window).end
    except (KeyError, TypeError, ValueError):
        manifest = reg.verify_version(registry, model_name, version)
        return dt.datetime.fromisoformat(manifest["created_at"]).date()


def last_retrain(path: Path | None, model_name: str) -> dt.date | None:
    """The day (``--until``) of the last retrain that ran to its decision."""
    found = ledger.last(ledger.read(path), job="retrain", model_name=model_name) if path else None
    return found.partition if found else None


# --- train, evaluate, gate ----------------------------------------------------------------


def _recipe(cfg: RetrainConfig, live: str) -> tuple[dict[str, Any], TrainConfig, int | None]:
    """The live version's architecture overrides, training config and window length."""
    doc = reg.load_document(cfg.registry, cfg.model_name, live, "config")
    sized = ("pin_buckets", "interest_vocab")  # from the new data, not copied
    overrides = {k: v for k, v in (doc.get("model") or {}).items() if k not in sized}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    trained = {k: v for k, v in (doc.get("train") or {}).items() if k in known}
    opts = cfg.options
    tcfg = dataclasses.replace(
        TrainConfig(**trained),
        epochs=opts.epochs or trained.get("epochs"),
        seed=trained.get("seed", 0) if opts.seed is None else opts.seed,
        threads=opts.threads,
        progress=cfg.progress,
    )
    days = opts.train_days or window_days(
        reg.load_document(cfg.registry, cfg.model_name, live, "window")
    )
    return overrides, tcfg, days


def shuffled(data: LakeData, seed: int) -> LakeData:
    """``data`` with its offsite pins permuted across events (the test hook)."""
    log = data.offsite
    pins = np.random.default_rng(seed).permutation(log.pin)
    return dataclasses.replace(data, offsite=dataclasses.replace(log, pin=pins))


def train_candidate(cfg: RetrainConfig, live: str, first: dt.date) -> tuple[str, Result]:
    """Train and register N+1 on the newest window before the held-out one."""
    overrides, tcfg, days = _recipe(cfg, live)
    window = train_window(cfg.held_out, days, first)
    data = load_lake(cfg.lake, window=window, cfg=ModelConfig(**overrides))
    if len(data.offsite) == 0:
        raise RetrainError(f"no offsite events in {cfg.lake} in {window.start}..{window.end}")
    if cfg.options.shuffle_labels_seed is not None:
        data = shuffled(data, cfg.options.shuffle_labels_seed)
    mcfg = ModelConfig.for_data(len(data.catalog), data.catalog.max_interest_id, **overrides)
    source = make_source(data.offsite, data.catalog, data.engagements, data.users, mcfg)
    tcfg = tcfg.resolve(len(source.log), len(source.catalog))
    result = train_model(source, tcfg)
    doc = {
        **window.to_json(),
        "holdout": "none",
        "held_out": cfg.held_out.to_json(),
        "retrained_from": live,
        "events": len(data.offsite),
        "train_events": len(source.log),
        "pins": len(data.catalog),
        "shuffled_labels": cfg.options.shuffle_labels_seed is not None,
    }
    metrics = {
        "loss": result.history[-1]["loss"] if result.history else None,
        "examples": result.examples,
        "train_seconds": round(result.seconds, 2),
        "history": result.history,
    }
    # Pruning waits for the gate (``retire``): it decides whether this one is rejected.
    version = save_model(
        cfg.registry, result.model, doc, metrics, cfg.model_name, 1 << 30, tcfg.to_json()
    )
    return version, {"window": window.to_json(), "epochs": tcfg.epochs, **metrics}


def evaluate_on_held_out(
    cfg: RetrainConfig, versions: list[str], since: dt.date
) -> tuple[dict[str, Result], int]:
    """Metrics of each version on the same held-out targets (history from ``since``); and
    the number of users they were computed on."""
    held = cfg.held_out
    window = Window(since, held.end)
    start_s = int(dt.datetime.combine(held.start, dt.time(), dt.UTC).timestamp())
    end_s = int(dt.datetime.combine(held.end + DAY, dt.time(), dt.UTC).timestamp())
    models = {v: load_model(cfg.registry, v, cfg.model_name)[1] for v in versions}
    data = load_lake(cfg.lake, window=window, cfg=models[versions[0]].cfg)
    log = data.offsite
    targets = held_out_targets(log.user, log.ts, start_s, end_s)
    if len(targets) == 0:
        raise RetrainError(
            f"no user has a last offsite event in the held-out window {held.start}..{held.end} "
            f"of {cfg.lake}; nothing to compare the versions on"
        )
    if len(targets) > cfg.options.gate_users:
        rng = np.random.default_rng(0)  # the same users for both versions, every run
        targets = np.sort(rng.choice(targets, cfg.options.gate_users, replace=False))
    train_cols, _ = data.catalog.index_of(log.pin[log.ts < start_s])
    popularity = popularity_scores(train_cols, len(data.catalog))
    out = {}
    for version, model in models.items():
        users = data.users
        if _buckets(model.cfg) != _buckets(models[versions[0]].cfg):
            users = read_users(cfg.lake, model.cfg)  # demographics coded for this version
        source = make_source(log, data.catalog, data.engagements, users, model.cfg)
        metrics = evaluate_targets(model, source, targets, popularity, ks=(10, 50))
        out[version] = {**metrics, "state_share": state_share(model, source, targets)}
    return out, len(targets)


def _buckets(mcfg: ModelConfig) -> tuple[int, int]:
    return mcfg.country_buckets, mcfg.segment_buckets


def _check_fair(cfg: RetrainConfig, live: str) -> None:
    """Refuse when the live version trained on the held-out window (a version saved
    without a training window is taken as not having seen it)."""
    window = reg.load_document(cfg.registry, cfg.model_name, live, "window")
    reached = Window.from_json(window).end if window_days(window) else None
    if reached is not None and reached >= cfg.held_out.start:
        raise RetrainError(
            f"the live version {live} trained on events up to {reached}, inside the held-out "
            f"window {cfg.held_out.start}..{cfg.held_out.end}: it would be judged on what it "
            "learned; retrain with a later --until"
        )


# --- the run ------------------------------------------------------------------------------


def run_retrain(
    cfg: RetrainConfig,
    rollout: Callable[[str], Result] | None,
    log: TextIO | None = None,
    clock: Callable[[], dt.datetime] = ledger.utc_now,
) -> Result:
    """Train, gate, then roll out (``rollout(candidate)``: build and publish it for day D)
    or reject. Returns the report (also written under ``REGISTRY/<model>/gate/``).

    A roll-out that raises (or is interrupted) marks the candidate rejected with that
    reason before the error goes on: half-built, it must not become "latest"."""
    log = log or sys.stderr
    live = live_version(cfg.indexes, cfg.model_name)
    _check_fair(cfg, live)
    present = partitions(cfg.lake, "offsite_conversions")
    if not present:
        raise RetrainError(f"no offsite_conversions partitions in {cfg.lake}")
    started = time.monotonic()
    with ledger.Run(
        cfg.ledger, "retrain", partition=cfg.until, model_name=cfg.model_name, model_version=live
    ) as run:
        candidate, trained = train_candidate(cfg, live, present[0])
        print(f"retrain {cfg.until}: trained {candidate} on {trained['window']}", file=log)
        gated = time.monotonic()
        report = judge(cfg, live, candidate, trained, clock)
        seconds = {"train": round(gated - started, 3), "gate": round(time.monotonic() - gated, 3)}
        if report["gate"]["passed"]:
            rolled = time.monotonic()
            report["rollout"] = _roll_out(cfg, candidate, rollout)
            report["decision"] = PASSED if rollout is None else PUBLISHED
            seconds["rollout"] = round(time.monotonic() - rolled, 3)
        else:
            report["decision"] = REJECTED
            reason = {"reason": report["gate"]["reason"], "rejected_at": report["created_at"]}
            where = {"report": str(report_path(cfg, candidate))}
            reg.mark_rejected(cfg.registry, cfg.model_name, candidate, {**reason, **where})
        report["served"] = live_version(cfg.indexes, cfg.model_name)
        report["retired"] = retire(cfg)
        report["seconds"] = {**seconds, "total": round(time.monotonic() - started, 3)}
        path = report_path(cfg, candidate)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, report)
        run.succeeded(
            output=path,
            model_version=candidate,
            decision=report["decision"],
            live_version=live,
            served=report["served"],
            gate={c["metric"]: [c["live"], c["candidate"]] for c in report["gate"]["checks"]},
        )
    verdict = f"{report['decision']} {candidate} (served: {report['served']})"
    print(f"retrain {cfg.until}: {verdict}; {report['gate']['reason']}", file=log, flush=True)
    return report


def judge(
    cfg: RetrainConfig,
    live: str,
    candidate: str,
    trained: Result,
    clock: Callable[[], dt.datetime] = ledger.utc_now,
) -> Result:
    """Evaluate both versions on the held-out events and decide: the report, less the
    decision and what followed it."""
    since = Window.from_json(trained["window"]).start
    metrics, users = evaluate_on_held_out(cfg, [live, candidate], since)
    about = {k: v for k, v in trained.items() if k != "history"}
    return {
        "model_name": cfg.model_name,
        "until": cfg.until.isoformat(),
        "held_out": cfg.held_out.to_json(),
        "users": users,
        "live": {"version": live, "metrics": metrics[live]},
        "candidate": {"version": candidate, "metrics": metrics[candidate], **about},
        "gate": decide(metrics[candidate], metrics[live], cfg.options.gate),
        "created_at": clock().isoformat(),
    }


def _roll_out(
    cfg: RetrainConfig, candidate: str, rollout: Callable[[str], Result] | None
) -> Result | None:
    try:
        return None if rollout is None else rollout(candidate)
    except BaseException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        why = {"reason": f"roll-out failed: {first}"}
        reg.mark_rejected(cfg.registry, cfg.model_name, candidate, why)
        raise


def report_path(cfg: RetrainConfig, candidate: str) -> Path:
    return reg.model_dir(cfg.registry, cfg.model_name) / REPORTS / f"{candidate}.json"


def read_report(registry: Path, model_name: str, candidate: str) -> Result:
    return json.loads(
        (reg.model_dir(registry, model_name) / REPORTS / f"{candidate}.json").read_text()
    )


# --- keep only the servable versions ------------------------------------------------------


def retire(cfg: RetrainConfig) -> Result:
    """Prune the registry to ``keep_versions``, then delete the index builds and offline
    states of versions it no longer holds; never what ``serving.json`` names (live, previous)."""
    pruned = reg.prune(cfg.registry, cfg.model_name, cfg.options.keep_versions)
    pointer = read_pointer(model_root(cfg.indexes, cfg.model_name) / SERVING) or {}
    served = {pointer.get("model_version"), (pointer.get("previous") or {}).get("model_version")}
    kept = set(reg.list_versions(cfg.registry, cfg.model_name)) | served
    keep_dirs = pinned_dirs(cfg.indexes, cfg.model_name)
    builds = []
    for path, meta in list_indexes(cfg.indexes, cfg.model_name):
        if meta.get("model_version") not in kept and path.name not in keep_dirs:
            shutil.rmtree(path)
            builds.append(path.name)
    states = []
    for day in partitions(cfg.lake, contracts.USER_HISTORY_STATE):
        for folder in sorted(partition_dir(cfg.lake, contracts.USER_HISTORY_STATE, day).iterdir()):
            if not folder.is_dir() or version_problem(folder.name) or folder.name in kept:
                continue
            if (read_manifest(folder) or {}).get("model_name") == cfg.model_name:
                shutil.rmtree(folder)
                states.append(f"dt={day}/{folder.name}")
    return {"versions": pruned, "index_builds": builds, "states": states}
