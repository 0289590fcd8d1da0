"""Benchmark the daily encode job against the same encoder in a plain torch loop.

    .venv/bin/python bench/encode.py                 # 1M users x ~50 offsite events,
                                                     # then the job again at 100k users
    .venv/bin/python bench/encode.py --quick         # 10k users, well under a minute
    .venv/bin/python bench/encode.py --quick -- --direct_num_workers=1   # Beam options
    .venv/bin/python bench/encode.py --world-cache .towerline/bench-encode   # reuse worlds

Generates a world with towerline.world into a temporary directory (not timed; with
``--world-cache DIR`` once into DIR and reused: the 1M world takes minutes), registers
an untrained model sized for it, applies a private Feast repo (SQLite), then in one run:

- Beam: ``run_encode`` end to end in a child process, Parquet lake in -> offline Parquet
  published and Feast online rows written (``end_to_end_s``); ``beam_users_per_s`` =
  users / the pipeline part (read, shuffle, encode, stage, verify, publish);
  ``job_peak_rss_mb`` = the peak, over the run, of the summed resident memory of that
  child and its descendants (the DirectRunner's worker processes), polled every 0.2 s:
  the job alone, not the world generation or the raw comparison below (pages shared
  between the processes count once per process, so it errs high);
- raw: the same users, read with model.lake_io, encoded with the same batching and the
  same encoder in a plain loop on one torch thread (``raw_users_per_s`` counts the loop
  only, the read is reported as ``raw_read_s``; ``raw_users_per_cpu_s`` divides by the
  loop's CPU time instead, which a busy machine disturbs much less);
- ``max_abs_diff`` and ``users_differing`` compare both outputs;
- without ``--quick``, the job once more on a 100k-user world (``--rss-users``) for
  ``job_peak_rss_mb_100k``, so the growth of memory with users is visible.

The LAST printed line is one JSON object with at least
``{users, beam_users_per_s, raw_users_per_s, ratio, end_to_end_s, job_peak_rss_mb,
job_peak_rss_mb_100k, targets}``; ``targets`` says which of issue #13's targets
(peak <= 3 GB at 1M users, raw >= 5,000 users/s, ratio >= 0.8, 1M users end to end
< 6 min) the run met, and ``null`` for one its size does not test.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.compute as pc
import torch

from batch.encode import DEFAULT_PIPELINE_ARGS
from batch.encode_job import EncodeConfig, run_encode
from batch.encode_ops import encode_users
from batch.encode_output import OutputPaths, read_published
from model.artifacts import TwoTower, load_encoder, save_model
from model.config import ModelConfig
from model.lake_io import Window, read_events, read_pins
from towerline.core.contracts import CONVERSION_ACTIONS
from towerline.core.featurestore import apply_repo, open_store
from towerline.world import WorldConfig, generate

END = dt.date(2025, 6, 30)
FULL = {"users": 1_000_000, "pins": 200_000, "days": 30}
QUICK = {"users": 10_000, "pins": 20_000, "days": 30}
RSS_POLL_S = 0.2
RSS_USERS = 100_000  # the second, smaller run that shows how memory grows with users
# Issue #13's targets; the size ones hold at FULL["users"].
TARGET_PEAK_MB, TARGET_RAW, TARGET_RATIO, TARGET_E2E_S = 3000, 5000, 0.8, 360


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Bench arguments, and the Beam pipeline options after ``--``."""
    beam_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k users, under a minute")
    parser.add_argument("--users", type=int, help="override the number of users")
    parser.add_argument("--events-per-user", type=float, default=50.0)
    parser.add_argument("--shards", type=int, help="default: 64, or 8 with --quick")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--keep", type=Path, help="work here (must not exist) and keep it")
    parser.add_argument(
        "--world-cache", type=Path, help="generate each world once into this dir and reuse it"
    )
    parser.add_argument(
        "--rss-users",
        type=int,
        default=RSS_USERS,
        help="also run the job on a world of this many users for job_peak_rss_mb_100k "
        "(default 100000; 0 or --quick: skip)",
    )
    return parser.parse_args(own), beam_args


def prepare(
    args: argparse.Namespace, work: Path, users: int | None = None
) -> tuple[WorldConfig, Path, Path]:
    """Generate (or reuse) the world and register an untrained model sized for it (not
    timed); returns the world, its lake and the registry."""
    sizes = dict(QUICK if args.quick else FULL)
    sizes["users"] = users or args.users or sizes["users"]
    world = WorldConfig(**sizes, seed=0, end_date=END, offsite_per_user=args.events_per_user)
    lake = world_lake(world, work, args.world_cache)
    pins = read_pins(lake)
    cfg = ModelConfig.for_data(len(pins), pins.max_interest_id)
    registry = work / f"registry-{world.users}"
    save_model(registry, TwoTower.build(cfg).eval(), {"bench": "untrained"}, {})
    return world, lake, registry


def world_lake(world: WorldConfig, work: Path, cache: Path | None) -> Path:
    """The world's lake: generated into ``work``, or into ``cache`` once (generate()
    renames a world into place only when complete, so an existing one is whole). A
    cached lake loses the states of earlier bench runs, nothing else."""
    key = f"u{world.users}-p{world.pins}-d{world.days}-e{world.offsite_per_user:g}-s{world.seed}"
    lake = (cache / key if cache else work / key) / "lake"
    if lake.exists():
        shutil.rmtree(lake / "user_history_state", ignore_errors=True)
        print(f"world reused from {lake}", file=sys.stderr)
        return lake
    start = time.perf_counter()
    generate(world, lake, progress=False)
    print(f"world generated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return lake


def run_raw(lake: Path, registry: Path, batch_size: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """The plain loop: read every offsite event up to END, encode all users on one thread."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    first = dt.date(1970, 1, 1)
    log = read_events(lake, "offsite_conversions", Window(first, END), CONVERSION_ACTIONS)
    pins, encoder = read_pins(lake), load_encoder(registry)
    read_s = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), time.process_time()
    encoded = encode_users(encoder, log, pins, encoder.cfg.max_len, batch_size)
    users, hidden = encoded.users, encoded.hidden
    loop_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    timings = {
        "raw_read_s": round(read_s, 2),
        "raw_loop_s": round(loop_s, 2),
        "raw_users_per_cpu_s": round(len(users) / cpu_s, 1),
    }
    return timings, users, hidden


def compare(published: dict, users: np.ndarray, hidden: np.ndarray) -> dict:
    """How far the job's states are from the plain loop's, same users: the largest
    difference and the users off by more than 1e-4 (exact-millisecond ties of one user's
    events are ordered by file position in model.lake_io, by (pin, action) in the job)."""
    order = np.argsort(published["user_id"])
    if not np.array_equal(published["user_id"][order], users):
        return {"max_abs_diff": float("inf"), "users_differing": -1}
    diff = np.abs(published["hidden"][order] - hidden).max(axis=1)
    return {"max_abs_diff": float(diff.max()), "users_differing": int((diff > 1e-4).sum())}


def run_job(
    args: argparse.Namespace, work: Path, lake: Path, registry: Path, beam_args: list[str]
) -> dict:
    """The Beam job end to end into a private Feast (SQLite), in a child process whose
    memory is polled; its summary + ``job_peak_rss_mb`` + the published states."""
    feast_dir = work / f"feast-{registry.name}"
    apply_repo(open_store(online="sqlite", project="bench_encode", data_dir=feast_dir), lake=lake)
    shards = args.shards or (8 if args.quick else 64)
    cfg = EncodeConfig(
        lake=lake, day=END, registry=registry, shards=shards, batch_size=args.batch_size
    )
    job = run_in_child(_encode_job, cfg, beam_args, feast_dir)
    table = read_published(OutputPaths.of(lake, END, job["model_version"]))
    job["states"] = {
        "user_id": table["user_id"].to_numpy(),
        "hidden": pc.list_flatten(table["hidden"]).to_numpy().reshape(table.num_rows, -1),
    }
    return job


def _encode_job(cfg: EncodeConfig, beam_args: list[str], feast_dir: Path) -> dict:
    """What the child process runs: the job as a user runs it (CLI minus argument parsing)."""
    store = open_store(online="sqlite", project="bench_encode", data_dir=feast_dir)
    return run_encode(cfg, beam_args, store)


def run_in_child(target: Any, *call_args: Any) -> dict:
    """``target(*call_args)`` (a dict) in a fresh spawned process; adds
    ``job_peak_rss_mb``: the largest sum of RSS over it and its descendants, sampled
    every RSS_POLL_S (the parent's own memory, e.g. the raw comparison, is not in it)."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_child_main, args=(results, target, call_args))
    child.start()
    peak, reply = 0, None
    while reply is None:
        peak = max(peak, _tree_rss(child.pid))
        try:
            reply = results.get(timeout=RSS_POLL_S)
        except queue.Empty:
            if not child.is_alive():
                reply = _last_reply(results, child)
    child.join()
    ok, value = reply
    if not ok:
        raise RuntimeError(f"the job failed: {value}")
    return {**value, "job_peak_rss_mb": round(peak / 2**20, 1)}


def _last_reply(results: Any, child: Any) -> tuple[bool, Any]:
    """The reply of a child that has exited (its queue may still be flushing)."""
    try:
        return results.get(timeout=5)
    except queue.Empty:
        raise RuntimeError(f"the job's process died (exit code {child.exitcode})") from None


def _child_main(results: Any, target: Any, call_args: tuple) -> None:
    try:
        results.put((True, target(*call_args)))
    except BaseException as exc:  # reported to the parent, which raises it
        results.put((False, f"{type(exc).__name__}: {exc}"))


def _tree_rss(pid: int) -> int:
    """Bytes resident in process ``pid`` and all its descendants now (0 once gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        # A worker may end between the listing and the read.
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def targets(result: dict) -> dict:
    """Which of issue #13's targets this run met (None: not tested at this size)."""
    full = result["users"] >= FULL["users"]
    return {
        f"job_peak_rss_mb<={TARGET_PEAK_MB}@1M": result["job_peak_rss_mb"] <= TARGET_PEAK_MB
        if full
        else None,
        f"raw_users_per_s>={TARGET_RAW}": result["raw_users_per_s"] >= TARGET_RAW,
        f"ratio>={TARGET_RATIO}": result["ratio"] >= TARGET_RATIO,
        f"end_to_end_s<{TARGET_E2E_S}@1M": result["end_to_end_s"] < TARGET_E2E_S if full else None,
    }


def main(argv: list[str]) -> None:
    args, beam_args = parse_args(argv)
    beam_args = beam_args or list(DEFAULT_PIPELINE_ARGS)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="towerline-encode-") as tmp:
        work = args.keep or Path(tmp) / "work"
        work.mkdir(parents=True)
        world, lake, registry = prepare(args, work)
        job = run_job(args, work, lake, registry, beam_args)
        raw, users, hidden = run_raw(lake, registry, args.batch_size)
        agreement = compare(job.pop("states"), users, hidden)
        del users, hidden
        small = None
        if not args.quick and args.rss_users and args.rss_users != world.users:
            _, small_lake, small_registry = prepare(args, work, args.rss_users)
            small = run_job(args, work, small_lake, small_registry, beam_args)
            small.pop("states")
    print(json.dumps({"job": job, "raw": raw, "job_small": small}), file=sys.stderr)
    beam_rate, raw_rate = job["users_per_s"], job["rows"] / raw["raw_loop_s"]
    result = {
        "users": job["rows"],
        "beam_users_per_s": round(beam_rate, 1),
        "raw_users_per_s": round(raw_rate, 1),
        "ratio": round(beam_rate / raw_rate, 3),
        "end_to_end_s": job["total_s"],
        "job_peak_rss_mb": job["job_peak_rss_mb"],
        # The same job at --rss-users users (100k unless told; None with --quick), or
        # this run's own figure when it is the 100k-user run.
        "job_peak_rss_mb_100k": small["job_peak_rss_mb"]
        if small
        else (job["job_peak_rss_mb"] if world.users == RSS_USERS else None),
        "rss_users": args.rss_users if small else (RSS_USERS if world.users == RSS_USERS else None),
        "events": job["events"],
        "pipeline_s": job["offline_s"],
        "online_s": job.get("online_s"),
        **raw,
        **agreement,
        "beam_args": " ".join(beam_args),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],  # start, end
        "world": {"users": world.users, "pins": world.pins, "days": world.days},
    }
    result["targets"] = targets(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
