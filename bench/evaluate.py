"""Benchmark full-ranking evaluation throughput (`towerline evaluate`).

    .venv/bin/python bench/evaluate.py            # 100k users x 100k pins, 14 days
    .venv/bin/python bench/evaluate.py --quick    # 5k users x 10k pins, under a minute

Generates a world, registers an untrained model for it (scoring cost does not depend on
the weights) and times ``run_evaluate``: leave-one-out targets, encoder states, two
contexts, exact brute-force scoring against every pin, exclusions and metrics, plus the
popularity baseline. The LAST stdout line is one JSON object ``{users_per_s, users,
pins, seconds, threads, ...}`` with the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from model.artifacts import TwoTower, save_model
from model.config import ModelConfig
from model.jobs import run_evaluate
from model.lake_io import load_lake
from towerline.world import WorldConfig, generate

FULL = {"users": 100_000, "pins": 100_000, "days": 14}
QUICK = {"users": 5_000, "pins": 10_000, "days": 14}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small world, under a minute")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-users", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="towerline-bench-eval-") as tmp:
        lake, registry = Path(tmp) / "lake", Path(tmp) / "registry"
        world = WorldConfig(**sizes, seed=args.seed, end_date=dt.date(2025, 6, 30))
        generate(world, lake, progress=False)
        data = load_lake(lake)
        cfg = ModelConfig.for_data(len(data.catalog), data.catalog.max_interest_id)
        window = {**data.window.to_json(), "holdout": "leave-one-out"}
        version = save_model(registry, TwoTower.build(cfg).eval(), window, {})
        del data
        started = time.perf_counter()
        result = run_evaluate(
            lake, registry, version, batch_users=args.batch_users, threads=args.threads
        )
        seconds = time.perf_counter() - started
    out = {
        "users_per_s": round(result["users"] / seconds, 1),
        "users": result["users"],
        "pins": result["pins"],
        "seconds": round(seconds, 2),
        "threads": args.threads,
        "batch_users": args.batch_users,
        "contexts": 2,
        "torch": torch.__version__,
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
