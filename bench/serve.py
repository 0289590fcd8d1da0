"""Benchmark `towerline serve` /v1/retrieve against Feast's own HTTP feature server, in one run.

    .venv/bin/python bench/serve.py            # 1,000,000 pins, 100,000 users (~10 min)
    .venv/bin/python bench/serve.py --quick    # 50,000 pins, 5,000 users, under a minute

World (synthetic, built here, no Beam): a registry with one untrained TwoTower at the
production shapes (``ModelConfig.for_data(pins, 1023)``: dim 64, d_model 64); item-tower
embeddings of every pin (1-3 random interests each) in an HNSW index (M 16,
ef_construction ``--ef-construction``, ef_search 100) with its pin interests beside it,
published as batch/publish.py does (``serving.json``); in Redis, under a project of its
own (its keys deleted at the end): ``user_history_state`` (v1, random hidden state),
``user_profile`` and ``user_realtime_seq`` (0-15 recent pins) of every user and
``pin_profile`` of every pin, written with ``write_online`` in 10k batches.

Servers, each its own process group: ``towerline serve`` (one worker, ``--online redis``)
and ``feast serve`` (one worker, ``--max-requests 0 --no-access-log``, as DESIGN.md's
performance notes ask). Load: ``bench/loadgen.py``, an open-loop generator in a separate
process (fixed schedule, keep-alive connections, latency from the scheduled send time).

1. steady: ``--rate`` (300) req/s of POST /v1/retrieve (random user, random subject pin,
   k 100), alternating in segments with the same rate of POST /get-online-features to the
   Feast server for the same user features the retrieval reads (user_profile,
   user_history_state of v1, user_realtime_seq:pin_ids); p50/p99 of each, merged over
   the segments; /metrics scraped around the towerline segments for the per-stage times;
2. ramp: rates 300, 500, 750, 1000, ... for a few seconds each until p99 >= 50 ms or an
   error (a failed step is retried once: the 2 cores are shared with other work);
   ``max_rps`` = the highest rate that passed.
Where the time goes: ``stages_ms`` (mean ms per micro-batch of each stage from /metrics
over the steady towerline segments; ``stage_histograms`` the bucket counts), batch sizes,
server-side request time, CPU ms per request of each server, Redis and whole-machine
busy cores (other tenants show up there), and ``inprocess_single_request_ms``: each piece
of a retrieval (each Feast read, tower, ANN, rules, response encoding) timed alone in this
process before the servers start. ``--batch-window-ms`` / ``--workers`` pass through to
``towerline serve`` for tuning runs (the acceptance run uses its defaults, one worker).
Progress goes to stderr; the LAST line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import redis
import requests
import torch
from prometheus_client.parser import text_string_to_metric_families

from batch.index import item_inputs, save_pin_interests, version_facts
from model.artifacts import TwoTower, load_item_tower, save_model
from model.config import ModelConfig
from towerline.core.ann import (
    SERVING,
    HnswIndex,
    HnswParams,
    model_root,
    new_staging,
    publish_index,
)
from towerline.core.contracts import (
    AGE_BUCKETS,
    DEFAULT_MODEL_NAME,
    ENGAGEMENT_ACTIONS,
    GENDERS,
    INTEREST_SLOTS,
)
from towerline.core.featurestore import apply_repo, open_store, write_online
from towerline.core.files import write_json_atomic
from towerline.core.online_layout import delete_project_keys

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOADGEN = ROOT / "bench" / "loadgen.py"
FULL = {"pins": 1_000_000, "users": 100_000, "steady_s": 30.0, "segments": 3, "step_s": 6.0, "wait_quiet": 90.0}  # fmt: skip
QUICK = {"pins": 50_000, "users": 5_000, "steady_s": 8.0, "segments": 2, "step_s": 3.0, "wait_quiet": 10.0}  # fmt: skip
LADDER = (300, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000)
P99_LIMIT_MS = 50.0
INTERESTS = 1024  # interest ids 0..1023
VERSION_FEATURES = "v1"
FEAST_FEATURES = [
    "user_profile:age_bucket",
    "user_profile:gender",
    "user_profile:country",
    "user_profile:segment",
    "user_history_state:hidden",
    "user_history_state:history_len",
    "user_realtime_seq:pin_ids",
]
STAGES = ("features", "tower", "ann", "filters")
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "CA", "MX", "ES", "IT", "AU")
TARGETS = {"p99_ms": 10.0, "max_rps": 1000, "ratio_p99_vs_feast_server": 2.0, "errors": 0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="50k pins, 5k users, short phases")
    p.add_argument("--pins", type=int)
    p.add_argument("--users", type=int)
    p.add_argument("--steady-s", type=float, help="measured seconds at --rate, per server")
    p.add_argument("--segments", type=int, help="the steady phase alternates servers this often")
    p.add_argument("--step-s", type=float, help="measured seconds of each ramp step")
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--connections", type=int, default=32, help="load generator connections")
    p.add_argument("--ef-construction", type=int, default=150)
    p.add_argument("--redis-url", default="127.0.0.1:6379")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inprocess", type=int, default=300, help="iterations of the in-process breakdown")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="towerline serve worker processes")
    p.add_argument("--batch-window-ms", type=float, help="passed to towerline serve (default: its own)")  # fmt: skip
    p.add_argument("--keep", type=Path, help="build the world here and keep it; a later run with the same sizes reuses its index (default: a temp dir)")  # fmt: skip
    p.add_argument("--wait-quiet", type=float, help="wait up to this many s for the machine to be idle before measuring")  # fmt: skip
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    return args


def log(message: str) -> None:
    print(f"[serve-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the world -----------------------------------------------------------------------


def pin_table(n: int, rng: np.random.Generator) -> pa.Table:
    """Pins 1..n with 1-3 distinct-ish random interests, most confident first."""
    counts = rng.integers(1, INTEREST_SLOTS + 1, n)
    ids = rng.integers(0, INTERESTS, (n, INTEREST_SLOTS)).astype(np.int32)
    conf = -np.sort(-rng.random((n, INTEREST_SLOTS), dtype=np.float32), axis=1)
    keep = np.arange(INTEREST_SLOTS)[None, :] < counts[:, None]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.table(
        {
            "pin_id": np.arange(1, n + 1, dtype=np.int64),
            "interest_ids": pa.ListArray.from_arrays(offsets, ids[keep]),
            "interest_confidences": pa.ListArray.from_arrays(offsets, conf[keep]),
        }
    )


def embed(registry: Path, version: str, pins: pa.Table) -> np.ndarray:
    """(N, dim) item-tower embeddings, as the index job computes them."""
    tower = load_item_tower(registry, version)
    out = []
    with torch.inference_mode():
        for batch in pins.to_batches(max_chunksize=65_536):
            ids, interests, conf = item_inputs(pa.Table.from_batches([batch]))
            vectors = tower(torch.from_numpy(ids), torch.from_numpy(interests), torch.from_numpy(conf))  # fmt: skip
            out.append(vectors.numpy())
    return np.concatenate(out)


def reuse_index(root: Path, args: argparse.Namespace) -> dict | None:
    """The world a previous ``--keep`` run left in ``root``, if it has ``args.pins`` pins."""
    pointer = model_root(root / "indexes", DEFAULT_MODEL_NAME) / SERVING
    if not pointer.is_file():
        return None
    doc = json.loads(pointer.read_text())
    meta = json.loads((pointer.parent / doc["dir"] / "metadata.json").read_text())
    if meta.get("num_items") != args.pins or meta.get("hnsw", {}).get("ef_construction") != args.ef_construction:  # fmt: skip
        return None
    return {"version": doc["model_version"], "build_s": None, "dir": doc["dir"], "reused": True}


def build_index(root: Path, args: argparse.Namespace, pins: pa.Table) -> dict:
    """Registry v1, the HNSW index of every pin, pin interests, serving.json."""
    registry, indexes = root / "registry", root / "indexes"
    now = dt.datetime.now(dt.UTC)
    cfg = ModelConfig.for_data(args.pins, INTERESTS - 1)
    t0 = time.perf_counter()
    version = save_model(registry, TwoTower.build(cfg, seed=args.seed).eval(), {"synthetic": True}, {})  # fmt: skip
    vectors = embed(registry, version, pins)
    log(f"registry {version} + {len(vectors):,} item embeddings in {time.perf_counter() - t0:.1f}s; building HNSW ...")  # fmt: skip
    facts, _ = version_facts(registry, version, DEFAULT_MODEL_NAME, f"synthetic-{args.pins}", now)
    params = HnswParams(M=16, ef_construction=args.ef_construction, ef_search=100)
    t1 = time.perf_counter()
    index = HnswIndex.build(pins["pin_id"].to_numpy(), vectors, params, -1, metadata=facts)
    build_s = time.perf_counter() - t1
    log(f"HNSW built in {build_s:.1f}s; saving and publishing ...")
    staging = new_staging(indexes, DEFAULT_MODEL_NAME)
    meta = index.save(staging)
    del index, vectors
    corpus = root / "corpus.parquet"
    pq.write_table(pins.select(["pin_id", "interest_ids"]), corpus)
    meta = save_pin_interests(corpus, staging, meta)
    final = publish_index(staging, indexes, DEFAULT_MODEL_NAME, 3, now)
    doc = {  # the fields batch/publish.py writes
        "model_name": DEFAULT_MODEL_NAME,
        "model_version": version,
        "dir": final.name,
        "index_sha256": meta["sha256"]["index"],
        "corpus_snapshot": meta["corpus_snapshot"],
        "published_at": now.isoformat(),
        "history_states": {"synthetic": True, "rows": args.users},
        "previous": None,
    }
    write_json_atomic(model_root(indexes, DEFAULT_MODEL_NAME) / SERVING, doc)
    return {"version": version, "build_s": round(build_s, 1), "dir": final.name}


def user_tables(n: int, d_model: int, pins: int, version: str, rng: np.random.Generator) -> dict[str, pa.Table]:  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    now_ms = int(now.timestamp() * 1000)
    users = np.arange(1, n + 1, dtype=np.int64)
    hidden = rng.standard_normal((n, d_model), dtype=np.float32)
    seq_len = rng.integers(0, 16, n)
    offsets = np.concatenate([[0], np.cumsum(seq_len)]).astype(np.int32)
    total = int(offsets[-1])
    seq_pins = rng.integers(1, pins + 1, total)
    seq_ts = now_ms - 1000 * (seq_len.repeat(seq_len) - (np.arange(total) - np.repeat(offsets[:-1], seq_len)))  # fmt: skip
    actions = np.asarray(ENGAGEMENT_ACTIONS, dtype=object)[rng.integers(0, len(ENGAGEMENT_ACTIONS), total)]  # fmt: skip
    pick = lambda values: np.asarray(values, dtype=object)[rng.integers(0, len(values), n)]  # noqa: E731
    stamp = pa.array([now] * n, pa.timestamp("us", tz="UTC"))
    return {
        "user_history_state": pa.table(
            {
                "user_id": users,
                "model_version": [version] * n,
                "hidden": pa.FixedSizeListArray.from_arrays(hidden.reshape(-1), d_model).cast(
                    pa.list_(pa.float32())
                ),  # fmt: skip
                "history_len": rng.integers(1, 200, n).astype(np.int32),
                "last_event_ts_ms": rng.integers(0, 2**40, n),
                "event_timestamp": stamp,
            }
        ),
        "user_profile": pa.table(
            {
                "user_id": users,
                "age_bucket": pick(AGE_BUCKETS),
                "gender": pick(GENDERS),
                "country": pick(COUNTRIES),
                "segment": pick([f"segment_{i}" for i in range(20)]),
                "updated_ts": stamp,
            }
        ),
        "user_realtime_seq": pa.table(
            {
                "user_id": users,
                "pin_ids": pa.ListArray.from_arrays(offsets, seq_pins),
                "event_ts_ms": pa.ListArray.from_arrays(offsets, seq_ts.astype(np.int64)),
                "actions": pa.ListArray.from_arrays(offsets, pa.array(actions, pa.string())),
                "updated_ts_ms": np.full(n, now_ms, np.int64),
                "event_timestamp": stamp,
            }
        ),
    }


def write_features(store, tables: dict[str, pa.Table]) -> dict[str, float]:
    """Every table through ``write_online`` (10k-row batches); rows/s per view."""
    rates = {}
    for view, table in tables.items():
        t0 = time.perf_counter()
        write_online(store, view, table)
        seconds = time.perf_counter() - t0
        rates[view] = round(table.num_rows / seconds)
        log(f"  {view}: {table.num_rows:,} rows in {seconds:.1f}s")
    return rates


def pin_profiles(pins: pa.Table) -> pa.Table:
    n = pins.num_rows
    return pa.table(
        {
            "pin_id": pins["pin_id"],
            "interest_ids": pins["interest_ids"],
            "interest_confidences": pins["interest_confidences"],
            "image_signature": [f"sig{i}" for i in range(1, n + 1)],
            "updated_ts": pa.array([dt.datetime.now(dt.UTC)] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def drop_project(url: str, project: str) -> int:
    """Delete every Redis key of ``project`` (Feast ends each key with the project name)."""
    host, _, port = url.rpartition(":")
    client = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), socket_timeout=30)
    try:
        return delete_project_keys(client, project)
    finally:
        client.close()


# --- processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(name: str, argv: list[str], ready_url: str, timeout_s: float, log_file: Path) -> Iterator[subprocess.Popen]:  # fmt: skip
    """A server in a process group of its own; stopped (group SIGTERM, then SIGKILL) on exit."""
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline, answer = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {tail(log_file)}")
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(ready_url, timeout=2)
                if answer.status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{name} not ready after {timeout_s}s: {answer and answer.text}; {tail(log_file)}")  # fmt: skip
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):  # workers left by a master that died first
        os.killpg(proc.pid, signal.SIGKILL)


def redis_cpu(url: str) -> float:
    """CPU seconds of the Redis server (all its clients, other agents' too)."""
    host, _, port = url.rpartition(":")
    client = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), socket_timeout=5)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def wait_quiet(max_s: float, below_cores: float = 0.5) -> dict:
    """Wait (up to ``max_s``) until the machine is idle for 2 s: other tenants' jobs would
    otherwise be measured as our latency. Returns the wait and the busy cores seen."""
    t0, busy = time.monotonic(), None
    while True:
        busy = psutil.cpu_percent(interval=2.0) * (os.cpu_count() or 1) / 100
        if busy < below_cores or time.monotonic() - t0 >= max_s:
            break
    waited = round(time.monotonic() - t0, 1)
    if busy >= below_cores:
        log(f"  the machine is still busy ({busy:.2f} cores) after {waited}s; measuring anyway")
    return {"waited_s": waited, "busy_cores": round(busy, 2)}


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle (all processes, all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def tail(path: Path, n: int = 1500) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def cpu_seconds(proc: subprocess.Popen) -> float:
    """User + system CPU seconds of ``proc`` and its descendants (gunicorn's workers)."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(proc.pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def loadgen(url: str, path: str, body: str, rate: float, seconds: float, args: argparse.Namespace, raw: Path | None = None, expect: tuple[str, int] | None = None, seed: int = 0, method: str = "POST") -> dict:  # fmt: skip
    argv = [sys.executable, str(LOADGEN), "--url", url, "--path", path, "--body", body,
            "--users", str(args.users), "--pins", str(args.pins), "--rate", str(rate),
            "--duration", str(seconds), "--warmup", "1", "--connections", str(args.connections),
            "--seed", str(seed), "--method", method]  # fmt: skip
    if raw is not None:
        argv += ["--raw", str(raw)]
    if expect is not None:
        argv += ["--expect", expect[0], "--expect-count", str(expect[1])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_answers(tl_url: str, feast_url: str, retrieve_body: str, feast_body: str, k: int) -> dict:  # fmt: skip
    """Both servers answer user 1 with real rows (not cold-start / missing values)."""
    body = json.loads(retrieve_body.replace("$USER", "1").replace("$PIN", "1"))
    tl = requests.post(f"{tl_url}/v1/retrieve", json=body, timeout=10).json()
    fs = requests.post(f"{feast_url}/get-online-features", data=feast_body.replace("$USER", "1"), headers={"Content-Type": "application/json"}, timeout=10).json()  # fmt: skip
    statuses = [s for r in fs.get("results", []) for s in r.get("statuses", [])]
    return {
        "retrieve": {
            "history": tl.get("history"),
            "context": tl.get("context"),
            "candidates": len(tl.get("candidates", [])),
            "k": k,
        },  # fmt: skip
        "feast_statuses": sorted(set(statuses)),
        "feast_features": len(fs.get("metadata", {}).get("feature_names", [])),
    }


# --- metrics -------------------------------------------------------------------------


def scrape(url: str) -> dict[str, dict]:
    """/metrics -> {histogram name: {label: {"sum", "count", "buckets": [(le, cumulative)]}}}."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        by_label: dict[str, dict] = {}
        for s in family.samples:
            label = next((v for k, v in s.labels.items() if k != "le"), "")
            entry = by_label.setdefault(label, {"sum": 0.0, "count": 0, "buckets": []})
            if s.name.endswith("_bucket"):
                entry["buckets"].append((float(s.labels["le"]), int(s.value)))
            elif s.name.endswith("_sum"):
                entry["sum"] = float(s.value)
            elif s.name.endswith("_count"):
                entry["count"] = int(s.value)
        out[family.name] = by_label
    return out


def delta(before: dict, after: dict, name: str, label: str) -> dict | None:
    a = after.get(name, {}).get(label)
    if a is None:
        return None
    b = before.get(name, {}).get(label, {"sum": 0.0, "count": 0, "buckets": []})
    old = dict(b["buckets"])
    buckets = [(le, c - old.get(le, 0)) for le, c in a["buckets"]]
    return {"sum": a["sum"] - b["sum"], "count": a["count"] - b["count"], "buckets": buckets}


def summarise(d: dict | None, scale: float = 1000.0) -> dict | None:
    """Mean and the bucket bound holding the p50 / p99 of a histogram delta."""
    if not d or d["count"] <= 0:
        return None

    def bound(q: float) -> float | None:
        need = q * d["count"]
        for le, c in d["buckets"]:
            if c >= need:
                return le * scale if le != float("inf") else None
        return None

    return {
        "mean": round(d["sum"] / d["count"] * scale, 3),
        "p50_le": bound(0.5),
        "p99_le": bound(0.99),
        "count": d["count"],
    }


def where_time_goes(before: dict, after: dict) -> dict:
    """Per-stage ms per micro-batch, batch size, server-side request ms over a window."""
    stages = {s: summarise(delta(before, after, "towerline_serving_stage_seconds", s)) for s in STAGES}  # fmt: skip
    size = summarise(delta(before, after, "towerline_serving_batch_size", "retrieve"), scale=1)
    request = summarise(delta(before, after, "towerline_serving_request_seconds", "retrieve"))
    return {"stages_ms_per_batch": stages, "batch_size": size, "server_request_ms": request}


def stage_histograms(before: dict, after: dict) -> dict:
    """Bucket counts (not cumulative) of each stage over a window: {stage: {"<=ms": n}}."""
    out = {}
    for stage in STAGES:
        d = delta(before, after, "towerline_serving_stage_seconds", stage)
        if not d:
            continue
        prev, hist = 0, {}
        for le, c in d["buckets"]:
            key = "inf" if le == float("inf") else f"{le * 1000:g}"
            if c - prev:
                hist[f"<={key}ms"] = c - prev
            prev = c
        out[stage] = hist
    return out


def merged(raws: list[Path]) -> dict:
    values = np.sort(np.concatenate([np.loadtxt(p, ndmin=1) for p in raws if p.stat().st_size]))
    if not len(values):
        return {"p50_ms": None, "p99_ms": None, "n": 0}
    pct = lambda q: round(float(np.percentile(values, q, method="inverted_cdf")) * 1000, 3)  # noqa: E731
    return {"p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": round(float(values[-1]) * 1000, 3), "n": len(values)}  # fmt: skip


# --- in-process breakdown ------------------------------------------------------------


def inprocess_breakdown(root: Path, store, args: argparse.Namespace, iterations: int) -> dict:
    """Single-request costs of each piece of /v1/retrieve in this process (one torch
    thread, as the server): median / p99 ms over ``iterations`` random users and pins."""
    from serving.app import retrieve_body
    from serving.features import VIEWS, read_subjects, read_users
    from serving.online import OnlineReader
    from serving.retrieve import Answer, Ask, Retriever, forward
    from serving.rules import Rules, apply_rules
    from serving.versions import TowerCache, load_served, read_serving

    torch.set_num_threads(1)
    indexes, registry = root / "indexes", root / "registry"
    pointer = read_serving(indexes, DEFAULT_MODEL_NAME)
    served = load_served(indexes, registry, DEFAULT_MODEL_NAME, pointer, TowerCache(registry, DEFAULT_MODEL_NAME))  # fmt: skip
    tower, version = served.tower, served.model_version
    empty = tower.empty_state.numpy()
    retriever = Retriever(store)
    rng = np.random.default_rng(args.seed + 1)
    times: dict[str, list[float]] = {}

    def timed(name: str, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        times.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    def respond(got) -> bytes:  # the /v1/retrieve body, as serving.app builds it
        return retrieve_body(Answer(version, served.built_at, "cached", "subject_pin", *got)).encode()  # fmt: skip

    reader = OnlineReader(store, VIEWS)
    for i in range(iterations + 10):
        u, p = int(rng.integers(1, args.users + 1)), int(rng.integers(1, args.pins + 1))
        timed("online_history_1", reader.read, "user_history_state", [{"user_id": u, "model_version": version}])  # fmt: skip
        timed("online_profile_1", reader.read, "user_profile", [{"user_id": u}])
        timed("online_subject_1", reader.read, "pin_profile", [{"pin_id": p}])
        now_ms = int(time.time() * 1000)
        users = timed("read_users_1", read_users, reader, version, [u], tower.cfg, empty, now_ms)
        subjects = timed("read_subjects_1", read_subjects, reader, [p])
        vector = timed("tower_1", forward, tower, users, subjects)
        seen = users.seen[0]
        ids, scores = timed("ann_1", served.index.query, vector, args.k + len(seen))
        got = timed("rules_1", apply_rules, ids[0], scores[0], Rules(seen=seen), served.pins, args.k)  # fmt: skip
        timed("retriever_run_1", retriever.run, served, [Ask(u, p, args.k)])
        asks = [Ask(int(a), int(b), args.k) for a, b in zip(rng.integers(1, args.users + 1, 8), rng.integers(1, args.pins + 1, 8), strict=True)]  # fmt: skip
        timed("retriever_run_8_per_batch", retriever.run, served, asks)
        timed("response_build_encode_1", respond, got)
        if i == 9:
            times.clear()  # warm-up
    result = {}
    for name, values in times.items():
        v = np.asarray(values) * 1000
        result[name] = {"p50": round(float(np.median(v)), 3), "p99": round(float(np.percentile(v, 99)), 3)}  # fmt: skip
    return result


# --- the run ---------------------------------------------------------------------------


def run(args: argparse.Namespace, root: Path, project: str, started: float) -> dict:
    rng = np.random.default_rng(args.seed)
    load_before = os.getloadavg()
    log(f"building the world in {root}: {args.pins:,} pins, {args.users:,} users (load {load_before[0]:.2f})")  # fmt: skip
    for stale in ("feast", "feast_cli"):  # a kept world's Feast registry of an earlier run
        shutil.rmtree(root / stale, ignore_errors=True)
    pins = pin_table(args.pins, rng)  # first draw of rng: the same pins when a world is reused
    world = (reuse_index(root, args) if args.keep else None) or build_index(root, args, pins)
    if world.get("reused"):
        log(f"reusing the index and registry in {root} ({world['dir']})")
    store = open_store(online="redis", redis_url=args.redis_url, project=project, data_dir=root / "feast")  # fmt: skip
    apply_repo(store, lake=root / "lake")
    log(f"writing online features to Redis (project {project}) ...")
    cfg = ModelConfig.for_data(args.pins, INTERESTS - 1)
    tables = user_tables(args.users, cfg.d_model, args.pins, world["version"], rng)
    tables["pin_profile"] = pin_profiles(pins)
    del pins
    write_rates = write_features(store, tables)
    del tables
    log("timing each stage in this process, one request at a time ...")
    breakdown = inprocess_breakdown(root, store, args, args.inprocess)
    log("  " + ", ".join(f"{k} {v['p50']}" for k, v in breakdown.items()))
    setup_s = time.perf_counter() - started

    tl_port, feast_port = free_port(), free_port()
    tl_url, feast_url = f"http://127.0.0.1:{tl_port}", f"http://127.0.0.1:{feast_port}"
    tl_argv = [sys.executable, "-m", "towerline.cli", "serve", "--indexes", str(root / "indexes"),
               "--registry", str(root / "registry"), "--online", "redis", "--redis-url",
               args.redis_url, "--project", project, "--data-dir", str(root / "feast"),
               "--port", str(tl_port), "--workers", str(args.workers)]  # fmt: skip
    if args.batch_window_ms is not None:
        tl_argv += ["--batch-window-ms", str(args.batch_window_ms)]
    feast_repo = root / "feast_cli"
    feast_repo.mkdir(exist_ok=True)
    (feast_repo / "feature_store.yaml").write_text(
        f"project: {project}\nprovider: local\nregistry: {root / 'feast' / 'registry.db'}\n"
        f"online_store:\n  type: redis\n  connection_string: {args.redis_url}\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    feast_argv = [str(BIN / "feast"), "-c", str(feast_repo), "serve", "-p", str(feast_port),
                  "-w", "1", "--max-requests", "0", "--no-access-log"]  # fmt: skip
    retrieve_body = '{"user_id": $USER, "subject_pin_id": $PIN, "k": ' + str(args.k) + "}"
    feast_body = json.dumps({"features": FEAST_FEATURES, "entities": {"user_id": [0], "model_version": [world["version"]]}}).replace("[0]", "[$USER]")  # fmt: skip
    expect = ('"pin_id"', args.k)  # every retrieval answers k candidates
    feast_expect = ('"PRESENT"', 8)  # join keys + features found (realtime may be empty)

    log("starting towerline serve and feast serve ...")
    with (
        server("towerline serve", tl_argv, f"{tl_url}/readyz", 600, root / "towerline.log") as tl,
        server("feast serve", feast_argv, f"{feast_url}/health", 300, root / "feast.log") as fs,
    ):
        ready = requests.get(f"{tl_url}/readyz", timeout=5).json()
        sanity = check_answers(tl_url, feast_url, retrieve_body, feast_body, args.k)
        log(f"sanity: {sanity}")
        # Warm both (imports, first Redis connections, code paths) before measuring.
        loadgen(tl_url, "/v1/retrieve", retrieve_body, 100, 2, args, expect=expect)
        loadgen(feast_url, "/get-online-features", feast_body, 100, 2, args)

        seg_s = args.steady_s / args.segments
        quiet = {"steady": wait_quiet(args.wait_quiet)}
        tl_raw, fs_raw, tl_runs, fs_runs = [], [], [], []
        tl_cpu = fs_cpu = 0.0
        before, busy0, r0 = scrape(tl_url), machine_busy(), redis_cpu(args.redis_url)
        log(f"steady: {args.rate:g} req/s, {args.steady_s:g}s per server in {args.segments} alternating segments ...")  # fmt: skip
        for seg in range(args.segments):
            tl_raw.append(root / f"tl_{seg}.txt")
            c0 = cpu_seconds(tl)
            tl_runs.append(loadgen(tl_url, "/v1/retrieve", retrieve_body, args.rate, seg_s, args, tl_raw[-1], expect, seed=seg))  # fmt: skip
            tl_cpu += cpu_seconds(tl) - c0
            fs_raw.append(root / f"fs_{seg}.txt")
            c0 = cpu_seconds(fs)
            fs_runs.append(loadgen(feast_url, "/get-online-features", feast_body, args.rate, seg_s, args, fs_raw[-1], feast_expect, seed=seg))  # fmt: skip
            fs_cpu += cpu_seconds(fs) - c0
            log(f"  segment {seg}: towerline p99 {tl_runs[-1]['p99_ms']} ms, feast p99 {fs_runs[-1]['p99_ms']} ms")  # fmt: skip
        redis_cores = (redis_cpu(args.redis_url) - r0) / (2 * (args.steady_s + args.segments))
        after, machine_cores = (
            scrape(tl_url),
            (machine_busy() - busy0) / (2 * (args.steady_s + args.segments)),
        )
        tl_all, fs_all = merged(tl_raw), merged(fs_raw)
        # CPU over the segments' wall time (each loadgen run: warmup 1 s + seg_s + drain).
        wall = args.steady_s + args.segments
        steady_time = where_time_goes(before, after)
        histograms = stage_histograms(before, after)

        log("ramp: stepping the rate up until p99 >= 50 ms or an error (a failed step is retried once) ...")  # fmt: skip

        def ramp_step(rate: int) -> dict:
            c0, f0, r0, m0, busy0 = cpu_seconds(tl), cpu_seconds(fs), redis_cpu(args.redis_url), scrape(tl_url), machine_busy()  # fmt: skip
            step = loadgen(tl_url, "/v1/retrieve", retrieve_body, rate, args.step_s, args, expect=expect, seed=rate)  # fmt: skip
            wall_s = args.step_s + 1
            cores = (cpu_seconds(tl) - c0) / wall_s
            feast_cores = (cpu_seconds(fs) - f0) / wall_s
            redis_cores = (redis_cpu(args.redis_url) - r0) / wall_s
            seen = where_time_goes(m0, scrape(tl_url))
            ok = step["errors"] == 0 and step["p99_ms"] is not None and step["p99_ms"] < P99_LIMIT_MS  # fmt: skip
            out = {
                "rate": rate, "ok": ok, "p50_ms": step["p50_ms"], "p99_ms": step["p99_ms"],
                "errors": step["errors"], "achieved_rate": step["achieved_rate"],
                "send_lag_p99_ms": step["send_lag_p99_ms"], "server_cores": round(cores, 2),
                "server_cpu_ms_per_request": round(cores * 1000 / rate, 3),
                "redis_cores": round(redis_cores, 2), "idle_feast_server_cores": round(feast_cores, 2),
                "loadgen_cores": round(step["loadgen_cpu_s"] / wall_s, 2),
                "machine_busy_cores": round((machine_busy() - busy0) / wall_s, 2),
                "batch_mean": (seen["batch_size"] or {}).get("mean"),
                "server_request_mean_ms": (seen["server_request_ms"] or {}).get("mean"),
                "stages_mean_ms_per_batch": {s: (v or {}).get("mean") for s, v in seen["stages_ms_per_batch"].items()},
            }  # fmt: skip
            log(f"  {rate} req/s: p50 {step['p50_ms']} p99 {step['p99_ms']} ms, errors {step['errors']}, batch {out['batch_mean']}, server {cores:.2f} cores, redis {redis_cores:.2f}, machine {out['machine_busy_cores']} cores")  # fmt: skip
            return out

        ramp, max_rps = [], 0
        quiet["ramp"] = wait_quiet(args.wait_quiet)
        for rate in LADDER:
            step = ramp_step(rate)
            if not step["ok"]:
                ramp.append(step)
                time.sleep(3)
                quiet[f"ramp_retry_{rate}"] = wait_quiet(args.wait_quiet)
                step = {**ramp_step(rate), "retry": True}
            ramp.append(step)
            if not step["ok"]:
                break
            max_rps = rate
            time.sleep(1)
        # The HTTP floor: the same rate of GET /healthz (uvicorn + FastAPI + middleware, no
        # retrieval) shows how much of a request's CPU and latency the web layer takes.
        time.sleep(3)  # let the last ramp step's backlog drain
        c0 = cpu_seconds(tl)
        health = loadgen(tl_url, "/healthz", "", args.rate, args.step_s, args, method="GET")
        floor = {
            "p50_ms": health["p50_ms"], "p99_ms": health["p99_ms"], "errors": health["errors"],
            "server_cpu_ms_per_request": round((cpu_seconds(tl) - c0) * 1000 / (args.rate * (args.step_s + 1)), 3),
        }  # fmt: skip
        log(f"GET /healthz at {args.rate:g} req/s: {floor}")
        tl_log = tail(root / "towerline.log", 3000)

    p99, feast_p99 = tl_all["p99_ms"], fs_all["p99_ms"]
    errors = sum(r["errors"] for r in tl_runs)
    ratio = round(p99 / feast_p99, 3) if p99 and feast_p99 else None
    stages = steady_time["stages_ms_per_batch"]
    result = {
        "p50_ms": tl_all["p50_ms"],
        "p99_ms": p99,
        "rate": args.rate,
        "max_rps": max_rps,
        "feast_server_p99_ms": feast_p99,
        "ratio_p99_vs_feast_server": ratio,
        "errors": errors,
        "feast_server_p50_ms": fs_all["p50_ms"],
        "feast_server_errors": sum(r["errors"] for r in fs_runs),
        "targets_met": {
            "p99_ms<=10": p99 is not None and p99 <= TARGETS["p99_ms"],
            "max_rps>=1000": max_rps >= TARGETS["max_rps"],
            "ratio<=2.0": ratio is not None and ratio <= TARGETS["ratio_p99_vs_feast_server"],
            "errors==0": errors == 0,
        },
        "stages_ms": {s: (stages[s] or {}).get("mean") for s in STAGES},
        "stages_detail_ms_per_batch": stages,
        "stage_histograms": histograms,
        "batch_size": steady_time["batch_size"],
        "server_request_ms": steady_time["server_request_ms"],
        "towerline": {k: tl_all[k] for k in ("p90_ms", "max_ms", "n")},
        "feast_server": {k: fs_all[k] for k in ("p90_ms", "max_ms", "n")},
        "send_lag_p99_ms": max((r["send_lag_p99_ms"] or 0) for r in tl_runs + fs_runs),
        "achieved_rate": [r["achieved_rate"] for r in tl_runs],
        "server_cores_at_rate": round(tl_cpu / wall, 3),
        "feast_server_cores_at_rate": round(fs_cpu / wall, 3),
        "server_cpu_ms_per_request": round(tl_cpu * 1000 / (args.rate * wall), 3),
        "feast_server_cpu_ms_per_request": round(fs_cpu * 1000 / (args.rate * wall), 3),
        "machine_busy_cores_during_steady": round(machine_cores, 2),
        "redis_cores_during_steady": round(redis_cores, 3),
        "loadgen_cores_at_rate": round(sum(r["loadgen_cpu_s"] for r in tl_runs) / wall, 3),
        "ramp": ramp,
        "inprocess_single_request_ms": breakdown,
        "healthz_at_rate": floor,
        "sanity": sanity,
        "waited_for_quiet": quiet,
        "world": {
            "pins": args.pins,
            "users": args.users,
            "k": args.k,
            "hnsw": {"M": 16, "ef_construction": args.ef_construction, "ef_search": 100},
            "build_s": world["build_s"],
            "setup_s": round(setup_s, 1),
            "online_write_rows_per_s": write_rates,
            "index_dir": ready.get("index_dir"),
            "model_version": ready.get("model_version"),
        },
        "connections": args.connections,
        "serve_workers": args.workers,
        "batch_window_ms": args.batch_window_ms
        if args.batch_window_ms is not None
        else "serve default (2.0)",
        "cpus": os.cpu_count(),
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        "seconds": round(time.perf_counter() - started, 1),
    }
    if "Traceback" in tl_log or "ERROR" in tl_log:
        result["towerline_log_tail"] = tl_log[-1500:]
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    project = f"bench_serve_{uuid.uuid4().hex[:8]}"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = args.keep
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
        try:
            result = run(args, root, project, started)
        finally:
            log(f"deleting the Redis keys of {project} ...")
            with contextlib.suppress(redis.RedisError):
                log(f"  {drop_project(args.redis_url, project):,} keys deleted")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
