"""Benchmark two-tower training throughput on a generated world.

    .venv/bin/python bench/train.py            # 10k users x 20k pins x 30 days, 1 epoch
    .venv/bin/python bench/train.py --quick    # 1k users x 2k pins x 7 days, under a minute

Generates the world into a temporary directory, builds the examples as `towerline train`
does (no holdout) and times one epoch of training steps (batch building runs on a second
thread meanwhile). The LAST stdout line is one JSON object ``{examples_per_s, examples,
seconds, steps, threads, batch_targets, ...}`` with the 1-minute load average before and
after: the machine is shared, and other processes slow a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from model.batches import make_source
from model.config import ModelConfig, TrainConfig
from model.lake_io import load_lake
from model.train import train_model
from towerline.world import WorldConfig, generate

FULL = {"users": 10_000, "pins": 20_000, "days": 30}
QUICK = {"users": 1_000, "pins": 2_000, "days": 7}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small world, under a minute")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=TrainConfig().threads)
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_targets)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--negatives",
        default=TrainConfig().negatives,
        help="auto | in_batch | mixed | catalogue (auto: full softmax up to 4,096 pins)",
    )
    parser.add_argument(
        "--weight-average",
        type=float,
        default=TrainConfig().weight_average,
        help="decay of the moving average of the weights; 0 = off (its cost per step)",
    )
    parser.add_argument(
        "--mask-seen",
        action=argparse.BooleanOptionalAction,
        default=TrainConfig().mask_seen,
        help="leave each target's seen pins out of the exact softmax (its cost per step)",
    )
    parser.add_argument(
        "--request-gap",
        action=argparse.BooleanOptionalAction,
        default=ModelConfig().request_gap,
        help="the request gap in the online tower's context (its cost per step)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="towerline-bench-train-") as tmp:
        world = WorldConfig(**sizes, seed=args.seed, end_date=dt.date(2025, 6, 30))
        generate(world, Path(tmp), progress=False)
        started = time.perf_counter()
        data = load_lake(Path(tmp))
        cfg = ModelConfig.for_data(
            len(data.catalog), data.catalog.max_interest_id, request_gap=args.request_gap
        )
        source = make_source(data.offsite, data.catalog, data.engagements, data.users, cfg)
        prepare_s = time.perf_counter() - started
        tcfg = TrainConfig(
            epochs=args.epochs,
            batch_targets=args.batch_size,
            threads=args.threads,
            seed=args.seed,
            progress=False,
            negatives=args.negatives,
            weight_average=args.weight_average,
            mask_seen=args.mask_seen,
        )
        result = train_model(source, tcfg)
        negatives = tcfg.negatives_for(len(source.catalog))
    out = {
        "examples_per_s": round(result.examples_per_s, 1),
        "examples": result.examples,
        "seconds": round(result.seconds, 2),
        "prepare_s": round(prepare_s, 2),
        "threads": args.threads,
        "batch_targets": args.batch_size,
        "final_loss": round(result.history[-1]["loss"], 4),
        "negatives": negatives,
        "weight_average": args.weight_average,
        "mask_seen": args.mask_seen,
        "request_gap": args.request_gap,
        **sizes,
        "model": {
            k: v
            for k, v in dataclasses.asdict(cfg).items()
            if k in ("d_model", "layers", "max_len", "pin_buckets")
        },
        "torch": torch.__version__,
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
