"""Retrieval quality in one run: towerline vs SASRec on ml-100k, and what the subject-pin
context earns on a synthetic world with planted session intent.

    .venv/bin/python bench/quality.py [--data .towerline/data/ml-100k] [--seeds 3] [--quick]

- ml100k: `towerline train --holdout leave-one-out` + `towerline evaluate` (the job
  functions, CLI defaults) and SASRec (model/baselines/sasrec.py: full-softmax CE without
  the user's earlier items, as towerline trains, dropout 0.2, max length 50, early stopping with patience on the same validation events) on the
  same lake, split, candidates, exclusions and metrics (model/protocol.py), one run per
  seed; means over the seeds, their standard errors, and SASRec's epochs and convergence.
- synthetic: per seed a world (towerline/world, planted session intent) trained and
  evaluated the same way; Recall@10 with the subject-pin context (the newest on-platform
  engagement before the target) and without it, the planted oracle's Recall@10 (the
  generator's own pin probabilities given the true intent: the ceiling), and the context
  gain (with / without) with its standard error over the seeds.

Progress goes to stderr; the last stdout line is one JSON object. ``--quick`` (under a
minute) subsets ml-100k to 150 users, trains a few epochs, uses one small world: a smoke
run of the code path, not a result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a plain script

import numpy as np  # noqa: E402

from bench.movielens import QUICK_USERS, _subset  # noqa: E402
from bench.movielens import _pairs as pairs  # noqa: E402  (KEY=VALUE overrides)

DEFAULT_DATA = Path(".towerline/data/ml-100k")
HOW_TO_GET = (
    "download https://files.grouplens.org/datasets/movielens/ml-100k.zip from GroupLens and "
    "unzip it so that {data}/u.data exists, or pass --data DIR"
)
WORLD = {"users": 4_000, "pins": 8_000, "days": 30}
QUICK_WORLD = {"users": 300, "pins": 600, "days": 7}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Unzipped ml-100k.")
    p.add_argument("--workdir", type=Path, default=Path(".towerline/bench/quality"))
    p.add_argument("--seeds", type=int, default=3, help="runs per model and per world")
    p.add_argument("--quick", action="store_true", help="tiny data, few epochs, < 60 s")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every trainer")
    p.add_argument("--skip", choices=("ml100k", "synthetic"), action="append", default=[])
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="parts run at once, each in its own process (one core each); 1: one after another",
    )
    p.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                   help="towerline ModelConfig override (ablation), e.g. temperature=0.1")  # fmt: skip
    p.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                   help="towerline TrainConfig override (ablation), e.g. negatives=mixed")  # fmt: skip
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    err = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else 0.0
    return float(arr.mean()), err


def ratio_stderr(num: list[float], den: list[float]) -> tuple[float, float]:
    """Ratio of the means and its standard error (delta method, independent runs)."""
    (a, sa), (b, sb) = mean_stderr(num), mean_stderr(den)
    ratio = a / b if b else float("nan")
    return ratio, abs(ratio) * float(np.hypot(sa / a if a else 0.0, sb / b if b else 0.0))


def _train_and_evaluate(lake: Path, registry: Path, seed: int, args: argparse.Namespace) -> dict:
    from model.config import TrainConfig
    from model.jobs import run_evaluate, run_train

    quick = {"epochs": 3} if args.quick else {}
    options = {"seed": seed, "threads": args.threads, "progress": False} | quick
    tcfg = TrainConfig(**(options | pairs(args.train)))
    overrides = pairs(args.model)
    summary = run_train(
        lake, registry, holdout="leave-one-out", tcfg=tcfg, model_overrides=overrides
    )
    result = run_evaluate(lake, registry, summary["model_version"], threads=args.threads)
    return {"train": summary, "evaluate": result}


def _sasrec(lake: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from model.baselines.sasrec import SASRecConfig, run_leave_one_out
    from model.config import ModelConfig
    from model.lake_io import load_lake

    quick = {"epochs": 6, "eval_every": 2} if args.quick else {}
    cfg = SASRecConfig(seed=seed, threads=args.threads, **quick)
    # The same histories as towerline's encoder gets.
    cutoff = pairs(args.model).get("history_cutoff", ModelConfig().history_cutoff)
    return run_leave_one_out(load_lake(lake), cfg, log=log, history_cutoff=cutoff)


def ml100k(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from towerline.importers.movielens import import_movielens

    source = _subset(args.data, work / "subset", QUICK_USERS) if args.quick else args.data
    import_movielens(source, work / "lake")
    runs: dict[str, list[dict[str, float]]] = {"towerline": [], "sasrec": []}
    sasrec_runs = []
    seeds = 1 if args.quick else args.seeds
    for seed in range(seeds):
        t0 = time.perf_counter()
        tl = _train_and_evaluate(work / "lake", work / f"registry-{seed}", seed, args)
        runs["towerline"].append(tl["evaluate"]["with_context"])
        log(f"ml100k seed {seed} towerline {_short(tl['evaluate']['with_context'])} "
            f"best epoch {tl['train']['best_epoch']} ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        t0 = time.perf_counter()
        sas = _sasrec(work / "lake", seed, args)
        runs["sasrec"].append(sas["test"])
        sasrec_runs.append({k: sas[k] for k in ("best_epoch", "epochs_run", "converged")})
        log(f"ml100k seed {seed} sasrec {_short(sas['test'])} best epoch {sas['best_epoch']} "
            f"of {sas['epochs_run']} ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    out: dict[str, Any] = {}
    for metric in ("recall@10", "ndcg@10"):
        tl_values = [r[metric] for r in runs["towerline"]]
        sas_values = [r[metric] for r in runs["sasrec"]]
        out[f"towerline_{metric}"] = round(mean_stderr(tl_values)[0], 4)
        out[f"sasrec_{metric}"] = round(mean_stderr(sas_values)[0], 4)
        ratio, err = ratio_stderr(tl_values, sas_values)
        out[f"ratio_{metric}"] = round(ratio, 4)
        out[f"ratio_{metric}_stderr"] = round(err, 4)
        out[f"towerline_{metric}_stderr"] = round(mean_stderr(tl_values)[1], 4)
        out[f"sasrec_{metric}_stderr"] = round(mean_stderr(sas_values)[1], 4)
    out["seeds"] = seeds
    out["sasrec_runs"] = sasrec_runs
    return out


def _short(metrics: dict[str, float]) -> str:
    return f"R@10 {metrics['recall@10']:.4f} NDCG@10 {metrics['ndcg@10']:.4f}"


def oracle_recall(world: Path, k: int = 10) -> float:
    """Recall@k of the planted oracle on the leave-one-out test targets of ``world``,
    under the same candidates and exclusions as the models (model/protocol.py)."""
    import torch

    from model.lake_io import load_lake
    from model.protocol import leave_one_out_split, metrics_from_ranks, rank_stats
    from towerline.world.oracle import load_oracle

    data = load_lake(world)
    full, catalog = data.offsite, data.catalog
    targets = np.sort(leave_one_out_split(full.user, full.ts).test)
    cols, _ = catalog.index_of(full.pin)
    starts = full.user_starts()
    oracle = load_oracle(world)
    greater, ties = [], []
    for lo in range(0, len(targets), 256):
        batch = targets[lo : lo + 256]
        scores = oracle.scores(full.user[batch], full.ts[batch], catalog.pin_id)
        exclude = [cols[s:t] for s, t in zip(starts[batch], batch, strict=True)]
        g, t = rank_stats(torch.from_numpy(scores), torch.from_numpy(cols[batch]), exclude)
        greater.append(g)
        ties.append(t)
    return metrics_from_ranks(torch.cat(greater), torch.cat(ties), ks=(k,))[f"recall@{k}"]


def synthetic(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from towerline.world import WorldConfig, generate

    sizes = QUICK_WORLD if args.quick else WORLD
    seeds = 1 if args.quick else args.seeds
    with_ctx, no_ctx, oracle, gains = [], [], [], []
    for seed in range(seeds):
        world = work / f"world-{seed}"
        t0 = time.perf_counter()
        generate(WorldConfig(**sizes, seed=seed), world, progress=False)
        result = _train_and_evaluate(world, work / f"registry-{seed}", seed, args)["evaluate"]
        with_ctx.append(result["with_context"]["recall@10"])
        no_ctx.append(result["no_context"]["recall@10"])
        gains.append(with_ctx[-1] / no_ctx[-1] if no_ctx[-1] else float("nan"))
        oracle.append(oracle_recall(world))
        log(f"synthetic seed {seed}: with context R@10 {with_ctx[-1]:.4f}, without "
            f"{no_ctx[-1]:.4f}, oracle {oracle[-1]:.4f} ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    gain, gain_err = mean_stderr(gains)
    return {
        "with_context_recall@10": round(mean_stderr(with_ctx)[0], 4),
        "no_context_recall@10": round(mean_stderr(no_ctx)[0], 4),
        "context_gain": round(gain, 4),
        "oracle_recall@10": round(mean_stderr(oracle)[0], 4),
        "seeds": seeds,
        "stderr": round(gain_err, 4),  # of the context gain, over the seeds
        "gain_z": round((gain - 1.0) / gain_err, 2) if gain_err else None,
        "per_seed": {"with_context": with_ctx, "no_context": no_ctx, "oracle": oracle},
        "world": sizes,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seeds < 1:
        raise SystemExit("error: --seeds must be >= 1")
    work = args.workdir / ("quick" if args.quick else "full")
    shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {"quick": args.quick}
    started = time.perf_counter()
    parts = {}
    if "ml100k" not in args.skip:
        if not (args.data / "u.data").is_file():
            reason = f"no ml-100k data in {args.data}: {HOW_TO_GET.format(data=args.data)}"
            log(f"error: {reason}")
            out["ml100k"] = {"skipped": reason}
        else:
            parts["ml100k"] = (ml100k, work / "ml100k")
    if "synthetic" not in args.skip:
        parts["synthetic"] = (synthetic, work / "synthetic")
    with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        futures = {name: pool.submit(fn, args, path) for name, (fn, path) in parts.items()}
        out |= {name: future.result() for name, future in futures.items()}
    out["overrides"] = {"model": pairs(args.model), "train": pairs(args.train)}
    out["threads"] = args.threads
    out["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
