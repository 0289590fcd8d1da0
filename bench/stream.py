"""Benchmark the stream worker against a bare consumer and Feast's push, in one run.

    .venv/bin/python bench/stream.py            # 300k events, 15 s of freshness probing
    .venv/bin/python bench/stream.py --quick    # 40k events, 5 s; under a minute

Own dev broker (4 partitions); Redis on 127.0.0.1:6379 (own Feast project, deleted after).
Workload: ``--users`` users drawn uniformly (nearly every event of a batch is another user:
one sequence row per event, the worst case), ``--pins`` pins Zipf(1.1); event_ts = now.
1. produce N events; 2. a bare kafka-python consumer group decodes them with the Avro codec
(headline: Python's default GC; details: also with the worker's ``tune_gc``); 3. one worker
applies them into Redis, on a thread of this process, events/s from its first batch on;
4. the same events applied again (fresh state namespaces and groups) by 1 and by 2 forked
worker processes (``towerline stream run --processes N``; one process runs the worker on its
main thread, as plain ``towerline stream run`` does), measured the same way for both (the
state store's applied offsets, polled from here, from the moment every partition has
moved: a group that joined in two rounds shows as a late ``all_partitions_after_s``).
Steps 3 and 4 each start from an empty online store (its rows deleted first: the state lives
in them, and a phase that found every key made would cost Redis less than the first).
Steps 2-4 run ``--repeats`` rounds (default 3): the rates of one run of the same code move
±10-20% on a shared 2-core VM, so each ratio is taken within its round and the headline
is the median over rounds. 5. SQLite on the first 30% of the events; 6. a forked process
produces at a steady ``--rate`` and polls ``get_online_features`` for marked events:
produce time → visible; 7. the same updates through ``FeatureStore.push``, one event (user
row + pin row) per call.
Prints details, then as its LAST line the JSON of the eight headline figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import multiprocessing as mp
import os
import resource
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from functools import partial
from pathlib import Path

# All imported before the load process is forked, so it starts with everything loaded.
import numpy as np
import pandas as pd
import psutil
import redis
from kafka import KafkaConsumer, KafkaProducer

from schemas.codec import AvroCodec
from schemas.errors import SchemaError
from streams.config import WorkerConfig
from streams.runner import run_worker_in_thread
from streams.stores import open_state_store
from streams.supervisor import start_workers, stop_workers
from towerline.core.contracts import ENGAGEMENT_ACTIONS
from towerline.core.featurestore import apply_repo, open_store
from towerline.core.kafka import ProducerSettings
from towerline.core.runtime import tune_gc
from towerline.devbroker import create_topics, running_broker

FULL = {"events": 300_000, "users": 1_000_000, "pins": 200_000, "probe_s": 15.0, "repeats": 3}
QUICK = {"events": 40_000, "users": 1_000_000, "pins": 200_000, "probe_s": 5.0, "repeats": 1}
SQLITE_SHARE = 0.3  # SQLite is measured on the first 30% of the events: it is the slow one
GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
PARTITIONS = 4
PROBE_USER, PROBE_EVERY = 10**12, 50  # every 50th event: a user of its own, visible = row exists
SCALE_NS = "towerline:streams:bench-scale"  # + worker kind and round: a state namespace per run
DEFAULT_GC = gc.get_threshold()  # Python's, before tune_gc() changes them


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="40k events, 5 s of probing")
    for name in ("--events", "--users", "--pins"):
        p.add_argument(name, type=int)
    p.add_argument("--probe-s", type=float, help="seconds of steady load for freshness")
    p.add_argument("--rate", type=float, default=5000.0, help="steady events/s for freshness")
    p.add_argument("--redis-url", default="127.0.0.1:6379")
    p.add_argument("--max-poll-records", type=int, default=5000)
    p.add_argument("--repeats", type=int, help="rounds of the rate phases; medians are reported (default 3, --quick 1)")  # fmt: skip
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    return args


def synth(n: int, users: int, pins: int, seed: int) -> np.ndarray:
    """(n, 3) int64: user_id, pin_id (Zipf 1.1 ranks, clipped), action index."""
    rng = np.random.default_rng(seed)
    cols = (rng.integers(0, users, n), np.minimum(rng.zipf(1.1, n), pins) - 1, rng.choice(4, n, p=[0.62, 0.22, 0.13, 0.03]))  # fmt: skip
    return np.stack(cols, axis=1).astype(np.int64)


def encode(codec: AvroCodec, row, eid: str, ts_ms: int) -> tuple[bytes, bytes]:
    rec = {"event_id": eid, "user_id": int(row[0]), "pin_id": int(row[1]),
           "action": ENGAGEMENT_ACTIONS[row[2]], "event_ts": dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)}  # fmt: skip
    return str(rec["user_id"]).encode(), codec.encode("Engagement", rec)


def produce_all(bootstrap: str, topic: str, rows: np.ndarray) -> float:
    """Send every row as fast as possible (event_ts = now); return records/s."""
    producer = KafkaProducer(**ProducerSettings(client_id="bench").kwargs(bootstrap))
    sent, seconds = send_rows(producer, AvroCodec(), topic, rows, rate=None, pending=None)
    producer.close()
    return sent / seconds


def bare_consumer_rate(consumer: KafkaConsumer, n: int) -> tuple[float, float]:
    """Decode ``n`` records only: (records/s from the first poll with data, CPU µs/record)."""
    codec = AvroCodec()
    seen, started, cpu0 = 0, None, 0.0
    while seen < n:
        for records in consumer.poll(timeout_ms=500).values():
            if started is None:
                started, cpu0 = time.perf_counter(), time.process_time()
            for r in records:
                try:  # noqa: SIM105 (free in the hot loop, unlike contextlib.suppress)
                    codec.decode(r.value, expected_subject="Engagement")
                except SchemaError:
                    pass
            seen += len(records)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return n / elapsed, cpu / n * 1e6


def bare_both(bootstrap: str, topic: str, n: int, max_poll: int) -> dict:
    """A group member that only decodes, with Python's default GC (the headline), then from
    the beginning again with the worker's tune_gc() (one group join for both: ~3 s less)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bare-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_poll_records=max_poll, **GROUP)  # fmt: skip
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_GC)
    plain, plain_cpu = bare_consumer_rate(consumer, n)
    consumer.seek_to_beginning()
    tune_gc()
    tuned, tuned_cpu = bare_consumer_rate(consumer, n)
    consumer.close()
    return {"plain_per_s": round(plain), "plain_cpu_us": round(plain_cpu, 1), "tuned_gc_per_s": round(tuned),
            "tuned_gc_cpu_us": round(tuned_cpu, 1)}  # fmt: skip


def worker_cfg(args, bootstrap: str, topic: str, namespace: str | None = None) -> WorkerConfig:
    cfg = WorkerConfig(group_id=f"bench-{uuid.uuid4().hex[:6]}", bootstrap=bootstrap, topic=topic,
                       max_poll_records=args.max_poll_records, **GROUP)  # fmt: skip
    return cfg if namespace is None else replace(cfg, state_namespace=namespace)


def worker_rate(args, bootstrap: str, topic: str, store, n: int, namespace: str | None = None) -> tuple[float, dict]:  # fmt: skip
    """Sustained events/s of one worker: from its first committed batch to ``n`` handled."""
    with run_worker_in_thread(worker_cfg(args, bootstrap, topic, namespace), store) as w:
        assert w.wait_until(lambda s: s.batches > 0, 120), "the worker never started"
        handled = lambda: w.stats.applied + w.stats.duplicates  # noqa: E731
        t0, n0, cpu0 = time.perf_counter(), handled(), time.process_time()
        assert w.wait_until(lambda _: handled() >= n, 600), w.stats
        cpu_us, rate = (time.process_time() - cpu0) / (handled() - n0) * 1e6, (handled() - n0) / (time.perf_counter() - t0)  # fmt: skip
        return rate, {"batches": w.stats.batches, "process_cpu_us_per_event": round(cpu_us, 1)}


def processes_rate(args, bootstrap: str, topic: str, project: str, data_dir: Path, processes: int, n: int, servers: dict, namespace: str) -> dict:  # fmt: skip
    """``processes`` forked workers of a new group apply all ``n`` events into Redis, with a
    state namespace of their own (so they start from nothing, as the first worker did).

    events/s from the first commit to all ``n`` applied, read from the state store (as the
    thread worker's figure: from its first batch on); CPU µs per event of the workers (start
    to exit, so with their start and group join) and of the broker and Redis (same window;
    the whole Redis server: any other client of it counts too).
    """
    cfg = worker_cfg(args, bootstrap, topic, namespace)
    opened = partial(open_store, online="redis", redis_url=args.redis_url, project=project, data_dir=data_dir)  # fmt: skip
    state = open_state_store(opened(), cfg.state_namespace, cfg.half_life_ms)
    if threading.active_count() > 1:  # a fork copies no thread: one holding a lock would hang it
        print(f"warning: forking with {threading.active_count()} threads alive")
    cpu0, started = _cpu(servers), time.perf_counter()
    stats = mp.get_context("fork").SimpleQueue()
    on_stop = partial(_send_stats, stats)  # runs in each child as it stops
    children = start_workers(cfg, opened, processes, on_stop=on_stop)
    try:
        first, applied_then, last = _watch(state, topic, n, children)
    finally:
        stop_workers(children)
        state.close()
    per_worker = [stats.get() for c in children if c.process.exitcode == 0]
    cpu = {k: round((v - cpu0[k]) / n * 1e6, 1) for k, v in _cpu(servers).items()}
    rate = (n - applied_then) / (last - first) if last > first else float("nan")
    return {"events_per_s": round(rate), "timed_events": n - applied_then, "first_commit_after_s": round(first - started, 1),
            "cpu_us_per_event": cpu, "wall_s": round(last - started, 1), "workers": per_worker}  # fmt: skip


def _send_stats(queue, _index: int, stats) -> None:
    queue.put({k: getattr(stats, k) for k in ("batches", "conflicts", "errors")})


def _watch(state, topic: str, n: int, children: list) -> tuple[float, int, float]:
    """Poll the applied offsets until ``n``: (first commit seen at, applied then, last at)."""
    first, applied_then, deadline = None, 0, time.perf_counter() + 600
    while True:
        done = sum(o + 1 for o in state.applied(topic, range(PARTITIONS)).values())
        now = time.perf_counter()
        if done >= n:
            return (now, done, now) if first is None else (first, applied_then, now)
        if first is None and done:
            first, applied_then = now, done
        assert all(c.process.exitcode is None for c in children), "a worker died"
        assert now < deadline, f"stalled at {done}/{n}"
        time.sleep(0.005)


def _cpu(servers: dict) -> dict[str, float]:
    """CPU seconds so far: of this process's waited-for children (the workers, once
    stopped), and of each server process in ``servers`` (name -> pid)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {"workers": usage.ru_utime + usage.ru_stime}
    for name, pid in servers.items():
        with contextlib.suppress(psutil.Error):  # another user's Redis: not ours to read
            times = psutil.Process(pid).cpu_times()
            out[name] = times.user + times.system
    return out


def server_pids(broker_pid: int, redis_url: str) -> dict[str, int]:
    client = redis.Redis.from_url(f"redis://{redis_url}")
    pid = int(client.info("server")["process_id"])
    client.close()
    return {"broker": broker_pid, "redis": pid}


def open_feast(kind: str, project: str, data_dir: Path, redis_url: str):
    store = open_store(online=kind, redis_url=redis_url, project=project, data_dir=data_dir)
    apply_repo(store)
    return store


def load_and_probe(conn) -> None:
    """Forked child: wait for a job, produce at a steady rate, probe visibility, send results."""
    job = conn.recv()
    if job is None:
        return
    store = open_store(online="redis", redis_url=job["redis_url"], project=job["project"], data_dir=Path(job["data_dir"]))  # fmt: skip
    producer = KafkaProducer(**ProducerSettings(client_id="bench-load").kwargs(job["bootstrap"]))
    pending: dict[int, int] = {}  # probe user -> produce ms
    seen, done = [], threading.Event()
    prober = threading.Thread(target=_probe, args=(store, pending, seen, done), daemon=True)
    prober.start()
    rows = synth(int(job["rate"] * job["probe_s"]) + 1, job["users"], job["pins"], seed=11)
    sent, elapsed = send_rows(producer, AvroCodec(), job["topic"], rows, job["rate"], pending)
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:  # the last probes become visible
        time.sleep(0.01)
    done.set()
    prober.join()
    conn.send({"sent": sent, "rate": sent / elapsed, "latencies_ms": seen, "lost": len(pending)})


def send_rows(producer, codec, topic: str, rows, rate: float | None, pending: dict | None):
    """Send ``rows`` (event_ts = send time) at ``rate``/s (None: at once), then flush.

    With ``pending``, every PROBE_EVERY-th event gets a probe user of its own, recorded
    with its send time. Returns (records sent, seconds).
    """
    started, sent = time.perf_counter(), 0
    while sent < len(rows):
        due = len(rows) if rate is None else min(len(rows), int((time.perf_counter() - started) * rate) + 1)  # fmt: skip
        for i in range(sent, due):
            row, now_ms = rows[i], int(time.time() * 1000)
            if pending is not None and i % PROBE_EVERY == 0:
                row, pending[PROBE_USER + i] = (PROBE_USER + i, row[1], row[2]), now_ms
            key, value = encode(codec, row, f"{topic}-{i}", now_ms)
            producer.send(topic, key=key, value=value)
        sent = due
        time.sleep(0.005 if rate else 0)
    producer.flush(120)
    return sent, time.perf_counter() - started


def _probe(store, pending: dict, seen: list, done: threading.Event) -> None:
    """Poll the online store for outstanding probe users; record produce→visible ms."""
    while not done.is_set():  # light: it shares the GIL with the sends it times
        users = list(pending)[:32]  # insertion order: the oldest first
        if users:
            got = store.get_online_features(["user_realtime_seq:event_ts_ms"], [{"user_id": u} for u in users]).to_dict()  # fmt: skip
            now_ms = time.time() * 1000
            for u, ts in zip(users, got["event_ts_ms"], strict=True):
                if ts:
                    seen.append(now_ms - pending.pop(u))
        time.sleep(0.003)


def freshness(conn, w, job: dict) -> dict:
    """Steady load against the (joined) worker ``w``: produce→visible percentiles."""
    assert w.wait_until(lambda _: len(w.worker._applied) + len(w.worker._resync) == 4, 120)
    conn.send(job)
    result, view = conn.recv(), w.freshness_ms((50, 99))
    batch_ms = {k: round(v * 1000, 1) for k, v in w.worker.metrics.batch_seconds.percentiles((50, 99)).items()}  # fmt: skip
    lat = np.asarray(result.pop("latencies_ms"))
    return {**result, "probes": int(lat.size), "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "worker_write_minus_event_ms": view, "batches": w.stats.batches, "batch_ms": batch_ms}  # fmt: skip


def push_one_by_one(store, rows: np.ndarray, seconds: float = 2.0) -> float:
    """Events/s through FeatureStore.push, one event (its user row + its pin row) per call."""
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        now = pd.Timestamp.now(tz="UTC")  # newer each time: Feast's Redis store skips older rows
        ms, (u, p, a) = now.value // 10**6, (int(x) for x in rows[n % len(rows)])
        seq = {"user_id": [u], "pin_ids": [[p]], "event_ts_ms": [[ms]], "actions": [[ENGAGEMENT_ACTIONS[a]]],
               "updated_ts_ms": [ms], "event_timestamp": [now]}  # fmt: skip
        counts = {f"decayed_{k.lower()}": [float(a == i)] for i, k in enumerate(ENGAGEMENT_ACTIONS)}  # fmt: skip
        pin = {"pin_id": [p], **counts, "last_event_ts_ms": [ms], "event_timestamp": [now]}
        store.push("user_realtime_seq_push_source", pd.DataFrame(seq))
        store.push("pin_engagement_push_source", pd.DataFrame(pin))
        n += 1
    return n / (time.perf_counter() - started)


def cleanup_redis(redis_url: str, project: str) -> None:
    """Delete the Feast rows (keys end with the project) and the worker state of the run."""
    unlink_matching(redis_url, f"*{project}", f"towerline:streams:{project}:*", f"{SCALE_NS}*:{project}:*")  # fmt: skip


def clear_rows(redis_url: str, project: str) -> None:
    """Delete the Feast rows (and the state in them), so each worker phase starts from the
    same empty store: the first phase would otherwise create every key, the others not."""
    unlink_matching(redis_url, f"*{project}")


def drop_namespace(redis_url: str, namespace: str, project: str) -> None:
    """Delete one round's worker state, so repeats keep Redis's memory (and speed) flat."""
    unlink_matching(redis_url, f"{namespace}:{project}:*")


def unlink_matching(redis_url: str, *patterns: str) -> None:
    client = redis.Redis.from_url(f"redis://{redis_url}")
    with client.pipeline(transaction=False) as pipe:
        for pattern in patterns:
            for key in client.scan_iter(match=pattern, count=5000):
                pipe.unlink(key)
        pipe.execute()
    client.close()


def repeated_rates(args, bootstrap: str, project: str, servers: dict, store, data_dir: Path, timed) -> dict:  # fmt: skip
    """``args.repeats`` rounds of: bare consumer, thread worker, 1 and 2 worker processes,
    each round on the same events with fresh groups and state. Rates on a shared 2-core VM
    move ±10-20% between runs of the same code; each ratio is taken within its round
    (neighbours in time) and the headline is the median over rounds."""
    rounds, n = [], args.events
    for i in range(args.repeats):
        thread_ns, procs_ns = f"{SCALE_NS}t{i}", {k: f"{SCALE_NS}{k}r{i}" for k in (1, 2)}
        bare = timed(f"bare_{i}", bare_both, bootstrap, "bench", n, args.max_poll_records)
        clear_rows(args.redis_url, project)
        redis_rate, redis_d = timed(f"redis_{i}", worker_rate, args, bootstrap, "bench", store, n, thread_ns)  # fmt: skip
        procs = {}
        for k in (1, 2):
            clear_rows(args.redis_url, project)
            procs[f"{k}"] = timed(f"processes_{k}_{i}", processes_rate, args, bootstrap, "bench", project, data_dir, k, n, servers, procs_ns[k])  # fmt: skip
        for namespace in (thread_ns, *procs_ns.values()):
            drop_namespace(args.redis_url, namespace, project)
        rounds.append(
            {"bare": bare, "redis": redis_rate, "redis_worker": redis_d, "processes": procs}
        )
    return {"rounds": rounds}


def run_phases(args, conn, bootstrap: str, broker_pid: int, project: str, data_dir: Path) -> dict:
    rows, r = synth(args.events, args.users, args.pins, seed=7), {"phase_seconds": {}}

    def timed(name: str, fn, *a):
        gc.collect()  # the previous phase's garbage, outside the measurement
        started = time.perf_counter()
        out = fn(*a)
        r["phase_seconds"][name] = round(time.perf_counter() - started, 1)
        return out

    redis_store = open_feast("redis", project, data_dir, args.redis_url)
    sqlite_store = open_feast("sqlite", project, data_dir, args.redis_url)
    r["produce_per_s"] = round(timed("produce", produce_all, bootstrap, "bench", rows))
    # Before the freshness worker's thread exists: the workers are forked from here.
    servers = server_pids(broker_pid, args.redis_url)
    r.update(repeated_rates(args, bootstrap, project, servers, redis_store, data_dir, timed))
    job = {**vars(args), "bootstrap": bootstrap, "topic": "bench-fresh", "project": project, "data_dir": str(data_dir)}  # fmt: skip
    # The freshness worker joins its group while SQLite is measured (a join takes ~3 s).
    with run_worker_in_thread(worker_cfg(args, bootstrap, "bench-fresh"), redis_store) as fresh_w:
        r["sqlite"] = timed("sqlite", worker_rate, args, bootstrap, "bench", sqlite_store, int(len(rows) * SQLITE_SHARE))  # fmt: skip
        r["freshness"] = timed("freshness", freshness, conn, fresh_w, job)
    r["push"] = timed("push", push_one_by_one, redis_store, rows)
    return report(args, r)


def _median(values) -> float:
    return float(np.median(list(values)))


def report(args, r: dict) -> dict:
    """The eight headline figures (medians over the rounds), and the details behind them."""
    sqlite_rate, sqlite_d = r.pop("sqlite")
    fresh, rounds = r.pop("freshness"), r.pop("rounds")
    for o in rounds:  # each ratio within its round: neighbours in time share the machine's mood
        bare, one, two = o["bare"], o["processes"]["1"]["events_per_s"], o["processes"]["2"]["events_per_s"]  # fmt: skip
        o["redis_vs_bare"] = round(o["redis"] / bare["plain_per_s"], 3)
        o["redis_vs_bare_tuned_gc"] = round(o["redis"] / bare["tuned_gc_per_s"], 3)
        o["one_process_vs_bare"] = round(one / bare["plain_per_s"], 3)
        o["scaling_2_workers"] = round(two / one, 3)
        o["redis"] = round(o["redis"])
    med = {key: _median(o[key] for o in rounds) for key in ("redis", "redis_vs_bare", "redis_vs_bare_tuned_gc", "one_process_vs_bare", "scaling_2_workers")}  # fmt: skip
    bare_rate = _median(o["bare"]["plain_per_s"] for o in rounds)
    two = _median(o["processes"]["2"]["events_per_s"] for o in rounds)
    headline = {"events_per_s_sqlite": round(sqlite_rate), "events_per_s_redis": round(med["redis"]),
                "bare_consumer_events_per_s": round(bare_rate), "freshness_p50_ms": round(fresh["p50_ms"], 1),
                "freshness_p99_ms": round(fresh["p99_ms"], 1), "feast_push_one_by_one_events_per_s": round(r["push"], 1),
                "events_per_s_redis_2_workers": round(two), "scaling_2_workers": round(med["scaling_2_workers"], 2)}  # fmt: skip
    details = {"events": args.events, "users": args.users, "pins": args.pins, "repeats": args.repeats,
               **{f"median_{k}": round(v, 3) for k, v in med.items() if k != "redis"},
               "sqlite_worker": sqlite_d, "freshness": fresh, "rounds": rounds, **r,
               "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}  # fmt: skip
    return {"headline": headline, "details": details}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tune_gc()  # as `towerline stream run` does
    ctx = mp.get_context("fork")  # now: modules loaded, no thread started yet
    conn, child_conn = ctx.Pipe()
    child = ctx.Process(target=load_and_probe, args=(child_conn,), daemon=True)
    child.start()
    project = f"bench_stream_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="towerline-bench-") as tmp, running_broker(Path(tmp) / "run") as broker:  # fmt: skip
        bootstrap, data_dir = broker.bootstrap, Path(tmp) / "feast"
        create_topics(bootstrap, ["bench", "bench-fresh"], partitions=4)
        try:
            result = run_phases(args, conn, bootstrap, broker.pid, project, data_dir)
        finally:
            with contextlib.suppress(OSError):
                conn.send(None)  # a child still waiting for its job exits
            child.join(5)
            cleanup_redis(args.redis_url, project)
    print(json.dumps(result["details"]))
    print(json.dumps(result["headline"]))


if __name__ == "__main__":
    main()
