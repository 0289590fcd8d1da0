"""Benchmark the ANN index: ``towerline.core.ann.HnswIndex`` against bare hnswlib.

    .venv/bin/python bench/index.py            # 1,000,000 pins x 64 dims, k = 100
    .venv/bin/python bench/index.py --quick    # 50,000 pins, well under a minute

Unit vectors (pin ids 1..N), inner product, M 16, ef_construction 200. ``--data clustered``
(default) draws each pin around one of 1,024 random "interest" directions,
normalise(center + 0.5 * noise / sqrt(dim)), the shape item-tower embeddings have (pins of
one interest cluster); ``--data uniform`` draws isotropic directions, the worst case for
any graph index (recall@100 at ef 100 measured 0.46 at 100k pins here). Measures the
build of ``HnswIndex.build`` (all cores), recall@100 of ``HnswIndex.query`` against exact
torch top-100 on a sample of queries, and single-query latency (one thread) of
``HnswIndex.query`` and of a bare ``hnswlib.Index`` loaded from the same saved graph, the
two interleaved query by query so load from other processes hits both alike. Progress
goes to stderr; the LAST line on stdout is one JSON object ``{n, build_s, recall_at_100,
query_p50_ms, query_p99_ms, raw_hnswlib_p99_ms, sharded_recall_at_100, sharded_p99_ms,
...}``. The machine is shared: the JSON carries the 1-minute load average before and after.

Sharded: the same pins split into ``--shards`` (4) indexes by ``shard_of(pin_id)``, each
built with the same parameters, queried for k one after another and merged by score
(``ShardedIndex``, what serving runs for a sharded set); its recall@100 is against the same
exact top-100 and its single-query latency is interleaved with the two above.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import hnswlib
import numpy as np
import torch

from towerline.core.ann import INDEX_FILE, METRIC, HnswIndex, HnswParams, ShardedIndex, shard_of

FULL = {"n": 1_000_000, "latency_queries": 2000, "recall_queries": 200}
QUICK = {"n": 50_000, "latency_queries": 1000, "recall_queries": 100}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k pins")
    parser.add_argument("--n", type=int, help="override the number of pins")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--ef", type=int, default=HnswParams().ef_search, help="query beam")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--threads", type=int, default=-1, help="build threads; -1 = all")
    parser.add_argument("--data", choices=("clustered", "uniform"), default="clustered")
    parser.add_argument("--clusters", type=int, default=1024, help="interest directions")
    parser.add_argument("--spread", type=float, default=0.5, help="pin noise vs. its center")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int, default=4, help="shards of the merged index")
    return parser.parse_args(argv)


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def sampler(args: argparse.Namespace, rng: np.random.Generator):
    """``draw(n)`` -> (n, dim) float32 unit vectors of the chosen distribution; pins and
    queries come from the same one."""
    centers = unit(rng.standard_normal((args.clusters, args.dim), dtype=np.float32))

    def draw(n: int) -> np.ndarray:
        noise = rng.standard_normal((n, args.dim), dtype=np.float32)
        if args.data == "uniform":
            return unit(noise)
        noise *= args.spread / np.sqrt(args.dim)
        for lo in range(0, n, 1 << 18):  # in place, in slices: no second 1M x 64 array
            part = slice(lo, lo + (1 << 18))
            noise[part] += centers[rng.integers(0, args.clusters, len(noise[part]))]
        return unit(noise)

    return draw


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def exact_top(data: torch.Tensor, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) row indices of the exact top-k inner products, in chunks of 64 queries."""
    out = []
    for lo in range(0, len(queries), 64):
        scores = torch.from_numpy(queries[lo : lo + 64]) @ data.T
        out.append(scores.topk(k, dim=1).indices.numpy())
    return np.concatenate(out)


def recall(
    index: HnswIndex | ShardedIndex, exact: np.ndarray, queries: np.ndarray, k: int, ef: int
) -> float:
    """Mean |approximate ∩ exact| / k against ``exact`` (Q, k) pin ids."""
    found, _ = index.query(queries, k, ef=ef)
    hits = [len(np.intersect1d(a, b)) for a, b in zip(found, exact, strict=True)]
    return float(np.mean(hits)) / k


def latencies(
    index: HnswIndex,
    bare: hnswlib.Index,
    sharded: ShardedIndex,
    queries: np.ndarray,
    k: int,
    ef: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query seconds (Q,) of ``index.query``, ``bare.knn_query`` and ``sharded.query``,
    interleaved (rotating which goes first) after 20 warm-up queries."""
    bare.set_ef(ef)
    ours, raw, merged = [], [], []
    for i, q in enumerate(queries):
        q = q[None, :]
        calls = [
            (ours, lambda q=q: index.query(q, k, ef=ef)),
            (raw, lambda q=q: bare.knn_query(q, k, 1)),
            (merged, lambda q=q: sharded.query(q, k, ef=ef)),
        ]
        for sink, call in calls[i % 3 :] + calls[: i % 3]:
            start = time.perf_counter()
            call()
            sink.append(time.perf_counter() - start)
    return np.array(ours[20:]), np.array(raw[20:]), np.array(merged[20:])


def build_shards(
    data: np.ndarray, count: int, params: HnswParams, threads: int
) -> tuple[ShardedIndex, list[int]]:
    """The pins (ids = row + 1) split by ``shard_of`` into ``count`` indexes, merged."""
    ids = np.arange(1, len(data) + 1)
    shard = shard_of(ids, count)
    parts = []
    for i in range(count):
        rows = np.flatnonzero(shard == i)
        parts.append(HnswIndex.build(ids[rows], data[rows], params, threads))
    return ShardedIndex(parts, {}), [len(p) for p in parts]


def ms(seconds: np.ndarray, q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 4)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = {**(QUICK if args.quick else FULL), **({"n": args.n} if args.n else {})}
    torch.set_num_threads(os.cpu_count() or 1)
    draw = sampler(args, np.random.default_rng(args.seed))
    load_before = os.getloadavg()[0]
    data, queries = draw(sizes["n"]), draw(sizes["latency_queries"] + 20)
    params = HnswParams(M=args.m, ef_construction=args.ef_construction, ef_search=args.ef)
    log(f"building {sizes['n']:,} x {args.dim} (load {load_before:.2f}) ...")
    start, cpu_start = time.perf_counter(), time.process_time()
    index = HnswIndex.build(np.arange(1, sizes["n"] + 1), data, params, args.threads)
    build_s, build_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    log(f"built in {build_s:.1f}s; {args.shards} shards of the same pins ...")
    start = time.perf_counter()
    sharded, shard_sizes = build_shards(data, args.shards, params, args.threads)
    sharded_build_s = time.perf_counter() - start
    log(f"built in {sharded_build_s:.1f}s; exact recall on {sizes['recall_queries']} queries ...")
    sample = queries[: sizes["recall_queries"]]
    exact = exact_top(torch.from_numpy(data), sample, args.k) + 1  # pin id = row + 1
    rec = recall(index, exact, sample, args.k, args.ef)
    sharded_rec = recall(sharded, exact, sample, args.k, args.ef)
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        index.save(Path(tmp))
        bare = hnswlib.Index(space=METRIC, dim=args.dim)  # the same graph, no wrapper
        bare.load_index(str(Path(tmp) / INDEX_FILE))
    log("timing single queries ...")
    ours, raw, merged = latencies(index, bare, sharded, queries, args.k, args.ef)
    result = {
        "n": sizes["n"],
        "dim": args.dim,
        "data": args.data
        if args.data == "uniform"
        else f"clustered({args.clusters},{args.spread})",
        "k": args.k,
        "ef": args.ef,
        "M": args.m,
        "ef_construction": args.ef_construction,
        "build_s": round(build_s, 2),
        "build_cpu_s": round(build_cpu_s, 2),  # CPU seconds of all build threads
        "recall_at_100": round(rec, 4),
        "query_p50_ms": ms(ours, 50),
        "query_p99_ms": ms(ours, 99),
        "raw_hnswlib_p50_ms": ms(raw, 50),
        "raw_hnswlib_p99_ms": ms(raw, 99),
        "p99_ratio": round(ms(ours, 99) / ms(raw, 99), 3),
        "queries": len(ours),
        "shards": args.shards,
        "shard_sizes": shard_sizes,
        "sharded_build_s": round(sharded_build_s, 2),
        "sharded_recall_at_100": round(sharded_rec, 4),
        "sharded_recall_delta": round(sharded_rec - rec, 4),
        "sharded_p50_ms": ms(merged, 50),
        "sharded_p99_ms": ms(merged, 99),
        "cpus": os.cpu_count(),
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
