"""towerline vs SASRec vs most-popular on MovieLens, under one leave-one-out protocol.

    .venv/bin/python bench/movielens.py [--data .towerline/data/ml-100k] [--quick]

Runs what a user runs: `towerline import movielens` → `towerline train --holdout
leave-one-out` → `towerline evaluate` (the same job functions, CLI defaults), then SASRec
(model/baselines/sasrec.py) on the same lake, split, candidates, exclusions and metrics.
Progress goes to stderr; the last stdout line is one JSON object. ``--quick`` keeps the
first 150 users and trains a few epochs (under a minute): a smoke run, not a result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a plain script

DEFAULT_DATA = Path(".towerline/data/ml-100k")
HOW_TO_GET = (
    "download https://files.grouplens.org/datasets/movielens/ml-100k.zip (or ml-1m.zip) from "
    "GroupLens and unzip it so that {data}/u.data (or ratings.dat) exists, or pass --data DIR"
)
QUICK_USERS = 150


def _pairs(values: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings -> dict, values parsed as JSON when they parse (numbers, bools)."""
    out: dict[str, Any] = {}
    for item in values:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Unzipped ml-100k or ml-1m.")
    p.add_argument("--workdir", type=Path, default=Path(".towerline/bench/movielens"))
    p.add_argument("--quick", action="store_true", help="150 users, few epochs, < 60 s.")
    p.add_argument("--threads", type=int, default=1, help="torch threads of both trainers.")
    p.add_argument("--skip", choices=("towerline", "sasrec"), action="append", default=[])
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="towerline ModelConfig override (diagnosis), e.g. temperature=0.1",
    )
    p.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="towerline TrainConfig override, e.g. epochs=30",
    )
    p.add_argument("--sasrec", action="append", default=[], metavar="KEY=VALUE",
                   help="SASRecConfig override, e.g. loss=bce")  # fmt: skip
    return p.parse_args(argv)


def _subset(data: Path, out: Path, users: int) -> Path:
    """A copy of an ml-100k download holding the ratings of the first ``users`` user ids."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("u.user", "u.item"):
        shutil.copyfile(data / name, out / name)
    with (data / "u.data").open() as src, (out / "u.data").open("w") as dst:
        dst.writelines(line for line in src if line.split("\t", 1)[0].isdigit()
                       and int(line.split("\t", 1)[0]) <= users)  # fmt: skip
    return out


def _towerline(lake: Path, registry: Path, args: argparse.Namespace) -> dict[str, Any]:
    from model.config import TrainConfig
    from model.jobs import run_evaluate, run_train

    train = {"threads": args.threads, "progress": False} | ({"epochs": 3} if args.quick else {})
    tcfg = TrainConfig(**(train | _pairs(args.train)))
    summary = run_train(
        lake, registry, holdout="leave-one-out", tcfg=tcfg, model_overrides=_pairs(args.model)
    )
    result = run_evaluate(lake, registry, summary["model_version"], threads=args.threads)
    return {"train": summary, "evaluate": result}


def _sasrec(lake: Path, args: argparse.Namespace, maxlen: int) -> dict[str, Any]:
    from model.baselines.sasrec import SASRecConfig, run_leave_one_out
    from model.config import ModelConfig
    from model.lake_io import load_lake

    quick = {"epochs": 6, "eval_every": 2} if args.quick else {}
    cfg = SASRecConfig(
        **({"maxlen": maxlen, "threads": args.threads} | quick | _pairs(args.sasrec))
    )
    # The histories towerline's encoder gets, so both models answer the same queries.
    cutoff = _pairs(args.model).get("history_cutoff", ModelConfig().history_cutoff)
    result = run_leave_one_out(
        load_lake(lake), cfg, log=lambda s: print(s, file=sys.stderr), history_cutoff=cutoff
    )
    return result | {"config": dataclasses.asdict(cfg)}


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from towerline.importers.movielens import MovieLensError, detect_layout, import_movielens

    try:
        layout = detect_layout(args.data)
    except MovieLensError:
        # Public data can't be fetched here; `make bench` goes on and says what is missing.
        reason = f"no MovieLens data in {args.data}: {HOW_TO_GET.format(data=args.data)}"
        print(f"error: {reason}", file=sys.stderr)
        print(json.dumps({"dataset": None, "skipped": reason}))
        return 0
    if args.quick and layout != "ml-100k":
        raise SystemExit("--quick subsets the ml-100k layout only")
    work = args.workdir / ("quick" if args.quick else layout)
    shutil.rmtree(work, ignore_errors=True)
    source = _subset(args.data, work / "subset", QUICK_USERS) if args.quick else args.data
    imported = import_movielens(source, work / "lake")
    print(f"imported {json.dumps(imported.to_json())}", file=sys.stderr)
    out: dict[str, Any] = {"dataset": layout, "quick": args.quick, "events": imported.ratings}
    if "towerline" not in args.skip:
        t0 = time.perf_counter()
        tl = _towerline(work / "lake", work / "registry", args)
        ev = tl["evaluate"]
        out |= {"users": ev["users"], "items": ev["pins"]}
        out |= {"towerline": _rounded(ev["with_context"])}
        out |= {"towerline_no_context": _rounded(ev["no_context"])}
        out |= {"popularity": _rounded(ev["popularity"])}
        out |= {"train_s_towerline": tl["train"]["train_seconds"]}
        out |= {"best_epoch_towerline": tl["train"]["best_epoch"]}
        out |= {"epochs_run_towerline": len(tl["train"]["history"])}
        validation = tl["train"]["validation"] or {}
        out |= {"validation_towerline": _rounded(validation.get("with_context", {}))}
        out |= {"wall_s_towerline": round(time.perf_counter() - t0, 1)}
    if "sasrec" not in args.skip:
        sas = _sasrec(work / "lake", args, maxlen=200 if layout == "ml-1m" else 50)
        out |= {"users": sas["users"], "sasrec": _rounded(sas["test"])}
        out |= {"validation_sasrec": _rounded(sas["validation"])}
        out |= {"train_s_sasrec": sas["train_seconds"], "best_epoch_sasrec": sas["best_epoch"]}
        out |= {"epochs_run_sasrec": sas["epochs_run"], "converged_sasrec": sas["converged"]}
        out |= {"sasrec_config": sas["config"]}
        out |= {"popularity_sasrec_path": _rounded(sas["popularity"])}
    out |= {"overrides": {"model": _pairs(args.model), "train": _pairs(args.train)}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
