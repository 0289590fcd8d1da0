"""Benchmark the synthetic world generator.

    .venv/bin/python bench/generate.py            # 1M users x ~50 offsite events, 30 days
    .venv/bin/python bench/generate.py --quick    # a small world, well under a minute

Writes into a temporary directory (removed afterwards unless --keep DIR is given). Prints
the generator's summary, then as its LAST line one JSON object
``{"users": ..., "events": ..., "seconds": ...}`` (events = offsite + engagements).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

from towerline.world import WorldConfig, generate

FULL = {"users": 1_000_000, "pins": 200_000, "days": 30}
QUICK = {"users": 50_000, "pins": 20_000, "days": 30}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small world (50k users)")
    parser.add_argument("--users", type=int, help="override the number of users")
    parser.add_argument("--pins", type=int, help="override the number of pins")
    parser.add_argument("--days", type=int, help="override the number of days")
    parser.add_argument("--offsite-per-user", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write here (must be empty) and keep it")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for name in sizes:
        if getattr(args, name) is not None:
            sizes[name] = getattr(args, name)
    cfg = WorldConfig(
        **sizes,
        seed=args.seed,
        end_date=dt.date(2025, 6, 30),
        offsite_per_user=args.offsite_per_user,
    )
    with tempfile.TemporaryDirectory(prefix="towerline-world-") as tmp:
        out = args.keep if args.keep is not None else Path(tmp) / "world"
        summary = generate(cfg, out, progress=not args.no_progress)
        summary["cpu_count"] = os.cpu_count()
        summary["load_avg_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(summary))
    events = summary["offsite_events"] + summary["engagement_events"]
    print(json.dumps({"users": cfg.users, "events": events, "seconds": summary["seconds"]}))


if __name__ == "__main__":
    main()
