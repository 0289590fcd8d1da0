"""Benchmark the daily encode job against the same encoder in a plain torch loop.

    .venv/bin/python bench/encode.py                 # 1M users x ~50 offsite events
    .venv/bin/python bench/encode.py --quick         # 10k users, well under a minute
    .venv/bin/python bench/encode.py --quick -- --direct_num_workers=1   # Beam options

Generates a world with towerline.world into a temporary directory (not timed), registers
an untrained model sized for it, applies a private Feast repo (SQLite), then in one run:

- Beam: ``run_encode`` end to end, Parquet lake in -> offline Parquet published and
  Feast online rows written (``end_to_end_s``); ``beam_users_per_s`` = users / the
  pipeline part (read, shuffle, encode, stage, verify, publish);
- raw: the same users, read with model.lake_io, encoded with the same batching and the
  same encoder in a plain loop on one torch thread (``raw_users_per_s`` counts the loop
  only, the read is reported as ``raw_read_s``);
- ``max_abs_diff`` and ``users_differing`` compare both outputs.

The LAST printed line is one JSON object with at least
``{users, beam_users_per_s, raw_users_per_s, ratio, end_to_end_s}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
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
    return parser.parse_args(own), beam_args


def prepare(args: argparse.Namespace, work: Path) -> tuple[WorldConfig, Path]:
    """Generate the world and register an untrained model sized for it (not timed)."""
    sizes = dict(QUICK if args.quick else FULL)
    sizes["users"] = args.users or sizes["users"]
    world = WorldConfig(**sizes, seed=0, end_date=END, offsite_per_user=args.events_per_user)
    start = time.perf_counter()
    generate(world, work / "lake", progress=False)
    print(f"world generated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    pins = read_pins(work / "lake")
    cfg = ModelConfig.for_data(len(pins), pins.max_interest_id)
    save_model(work / "registry", TwoTower.build(cfg).eval(), {"bench": "untrained"}, {})
    return world, work / "registry"


def run_raw(lake: Path, registry: Path, batch_size: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """The plain loop: read every offsite event up to END, encode all users on one thread."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    first = dt.date(1970, 1, 1)
    log = read_events(lake, "offsite_conversions", Window(first, END), CONVERSION_ACTIONS)
    pins, encoder = read_pins(lake), load_encoder(registry)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    users, hidden, _ = encode_users(encoder, log, pins, encoder.cfg.max_len, batch_size)
    loop_s = time.perf_counter() - start
    timings = {"raw_read_s": round(read_s, 2), "raw_loop_s": round(loop_s, 2)}
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


def run_job(args: argparse.Namespace, work: Path, registry: Path, beam_args: list[str]) -> dict:
    """The Beam job end to end into a private Feast (SQLite); its summary + states."""
    lake = work / "lake"
    store = open_store(online="sqlite", project="bench_encode", data_dir=work / "feast")
    apply_repo(store, lake=lake)
    shards = args.shards or (8 if args.quick else 64)
    cfg = EncodeConfig(
        lake=lake, day=END, registry=registry, shards=shards, batch_size=args.batch_size
    )
    job = run_encode(cfg, beam_args, store)
    table = read_published(OutputPaths.of(lake, END, job["model_version"]))
    job["states"] = {
        "user_id": table["user_id"].to_numpy(),
        "hidden": pc.list_flatten(table["hidden"]).to_numpy().reshape(table.num_rows, -1),
    }
    return job


def main(argv: list[str]) -> None:
    args, beam_args = parse_args(argv)
    beam_args = beam_args or list(DEFAULT_PIPELINE_ARGS)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="towerline-encode-") as tmp:
        work = args.keep or Path(tmp) / "work"
        work.mkdir(parents=True)
        world, registry = prepare(args, work)
        job = run_job(args, work, registry, beam_args)
        raw, users, hidden = run_raw(work / "lake", registry, args.batch_size)
        agreement = compare(job.pop("states"), users, hidden)
    print(json.dumps({"job": job, "raw": raw}), file=sys.stderr)
    beam_rate, raw_rate = job["users_per_s"], len(users) / raw["raw_loop_s"]
    result = {
        "users": job["rows"],
        "beam_users_per_s": round(beam_rate, 1),
        "raw_users_per_s": round(raw_rate, 1),
        "ratio": round(beam_rate / raw_rate, 3),
        "end_to_end_s": job["total_s"],
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
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
