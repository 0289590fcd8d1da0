"""Benchmark one daily chain and one retrain cycle on a synthetic world.

    .venv/bin/python bench/daily.py            # 100,000 users x ~50 offsite events, 30 days
    .venv/bin/python bench/daily.py --quick    # 2,000 users, in-process Beam, under a minute
    .venv/bin/python bench/daily.py --quick -- --direct_num_workers=1   # Beam options

Not timed: the world (towerline.world), a private Feast repo (SQLite), and v1: an untrained
model registered as if trained on END-14..END-8 (one epoch, batch 2048: the recipe the
retrain copies), so the held-out day END is new to both versions.

- ``daily_s``: the day's chain of END-1 for v1 (corpus snapshot, encode history states,
  index, publish), as ``towerline daily`` runs it (``batch.daily.run_chain``);
- ``retrain_s``: ``towerline retrain --until END`` end to end (``batch.daily.retrain_now``):
  train v2 on the ``--train-days`` days before END, gate it against v1 on END's held-out
  events, and, when it passes, its roll-out: states of END, index, publish;
- ``gate_s``: the gate part alone (load the window, evaluate both versions, decide).

The LAST printed line is one JSON object with at least ``{users, daily_s, retrain_s, gate_s}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from batch.daily import DailyConfig, retrain_now, run_chain
from batch.encode import DEFAULT_PIPELINE_ARGS
from batch.retrain import RetrainOptions
from model.artifacts import TwoTower, save_model
from model.config import ModelConfig, TrainConfig
from model.lake_io import read_pins
from towerline.core.featurestore import apply_repo, open_store
from towerline.world import WorldConfig, generate

END = dt.date(2025, 6, 30)
DAY = dt.timedelta(days=1)
FULL = {"users": 100_000, "pins": 20_000, "days": 30, "offsite_per_user": 50.0}
QUICK = {"users": 2_000, "pins": 2_000, "days": 10, "offsite_per_user": 20.0}
# --quick runs Beam in-process: starting worker processes would cost more than the work.
QUICK_BEAM = ("--runner=DirectRunner",)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Bench arguments, and the Beam pipeline options after ``--``."""
    beam_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k users, under a minute")
    parser.add_argument("--users", type=int, help="override the number of users")
    parser.add_argument("--train-days", type=int, default=7, help="the retrain's window")
    parser.add_argument("--keep", type=Path, help="work here (must not exist) and keep it")
    return parser.parse_args(own), beam_args


def prepare(args: argparse.Namespace, work: Path) -> WorldConfig:
    """The world and v1 (not timed)."""
    sizes = dict(QUICK if args.quick else FULL)
    sizes["users"] = args.users or sizes["users"]
    world = WorldConfig(**sizes, seed=0, end_date=END)
    start = time.perf_counter()
    generate(world, work / "lake", progress=False)
    print(f"world generated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    pins = read_pins(work / "lake")
    cfg = ModelConfig.for_data(len(pins), pins.max_interest_id)
    window = {"start": str(END - 14 * DAY), "end": str(END - 8 * DAY), "holdout": "none"}
    recipe = TrainConfig(epochs=1, batch_targets=2048, progress=False).to_json()
    save_model(work / "registry", TwoTower.build(cfg).eval(), window, {}, train_config=recipe)
    return world


def main(argv: list[str]) -> None:
    args, beam_args = parse_args(argv)
    beam_args = beam_args or list(QUICK_BEAM if args.quick else DEFAULT_PIPELINE_ARGS)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="towerline-daily-") as tmp:
        work = args.keep or Path(tmp) / "work"
        work.mkdir(parents=True)
        world = prepare(args, work)
        store = open_store(online="sqlite", project="bench_daily", data_dir=work / "feast")
        apply_repo(store, lake=work / "lake")
        cfg = DailyConfig(
            day=END - DAY,
            lake=work / "lake",
            registry=work / "registry",
            indexes=work / "indexes",
            ledger=work / "ledger.jsonl",
            pipeline_args=tuple(beam_args),
            progress=False,
            retrain=RetrainOptions(train_days=args.train_days),
        )
        start = time.perf_counter()
        chain = run_chain(cfg, "v1", store, sys.stderr)
        daily_s = time.perf_counter() - start
        start = time.perf_counter()
        report = retrain_now(dataclasses.replace(cfg, day=END), store)
        retrain_s = time.perf_counter() - start
    result = {
        "users": world.users,
        "daily_s": round(daily_s, 2),
        "retrain_s": round(retrain_s, 2),
        "gate_s": report["seconds"]["gate"],
        "train_s": report["seconds"]["train"],
        "rollout_s": report["seconds"].get("rollout"),
        "decision": report["decision"],
        "gate_users": report["users"],
        "train_examples": report["candidate"]["examples"],
        "daily_steps": {r["step"]: r["seconds"] for r in chain["steps"]},
        "beam_args": " ".join(beam_args),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],  # start, end
        "world": {"users": world.users, "pins": world.pins, "days": world.days},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
