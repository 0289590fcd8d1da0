"""Benchmark the freshness monitor over a Redis online store of 1,000,000 users.

    .venv/bin/python bench/freshness.py            # 1,000,000 users
    .venv/bin/python bench/freshness.py --quick    # 100,000 users; under a minute

Redis on 127.0.0.1:6379, own Feast project (its keys deleted at the end). The store is
filled with raw hashes in Feast's own layout (``towerline.core.online_layout``), pipelined:
per user a user_profile and a user_realtime_seq row (one hash: same entity) and a
user_history_state row of v1 (its own hash). Row times spread over the last day; v1 is
published (a tiny real index and serving.json) and the ledger holds recent runs.
Then times what `towerline freshness report` and `towerline freshness check` do (in
process): a full collection (every view sampled, ``--sample`` rows each) plus, for the
report, the history file and the HTML page. Prints the table and, as its LAST line,
JSON ``{users, sampled, report_s, check_s}``. Targets: report < 60 s, check < 10 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import redis
from feast.protos.feast.types.Value_pb2 import FloatList, Int64List, StringList, Value
from google.protobuf.timestamp_pb2 import Timestamp

from monitoring import history
from monitoring.collect import Sources, collect
from monitoring.report import render
from monitoring.table import check_lines, render_table
from towerline.core import ledger
from towerline.core.ann import (
    SERVING,
    HnswIndex,
    HnswParams,
    model_root,
    new_staging,
    publish_index,
)
from towerline.core.featurestore import apply_repo, open_store
from towerline.core.files import write_json_atomic, write_text_atomic
from towerline.core.online_layout import delete_project_keys, redis_key, view_layout

REDIS_URL = "127.0.0.1:6379"
MODEL, VERSION = "two_tower", "v1"
CHUNK = 5_000  # hashes per pipeline round trip
TEMPLATES = 512  # distinct row shapes (times, sequences) the users cycle through


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--sample", type=int, default=1000, help="Rows sampled per view.")
    p.add_argument("--quick", action="store_true", help="100,000 users.")
    args = p.parse_args(argv)
    if args.quick:
        args.users = 100_000
    return args


def _value(**kw) -> bytes:
    return Value(**kw).SerializeToString()


def _ts(ms: int) -> bytes:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000).SerializeToString()


def _templates(now_ms: int, rng: np.random.Generator) -> tuple[list[list[bytes]], list[list[bytes]], list[list[bytes]]]:  # fmt: skip
    """Field values of each view, TEMPLATES variants: ages spread over about a day."""
    prof, seq, states = [], [], []
    hidden = _value(float_list_val=FloatList(val=rng.normal(size=16).astype(np.float32).tolist()))
    for i in range(TEMPLATES):
        prof_ms = now_ms - int(rng.uniform(1, 20) * 3600_000)
        newest = now_ms - int(rng.exponential(30) * 1000)
        events = [newest - 60_000 * k for k in (2, 1, 0)]
        prof.append([_ts(prof_ms), _value(string_val="AGE_25_34"), _value(string_val="FEMALE"), _value(string_val="FR"), _value(string_val=f"s{i % 7}")])  # fmt: skip
        seq.append([
            _ts(newest),
            _value(int64_list_val=Int64List(val=[i, i + 1, i + 2])),
            _value(int64_list_val=Int64List(val=events)),
            _value(string_list_val=StringList(val=["CLICK", "SAVE", "CLOSEUP"])),
            _value(int64_val=newest + int(rng.exponential(0.05) * 1000)),
        ])  # fmt: skip
        states.append([_ts(now_ms - int(rng.uniform(2, 12) * 3600_000)), hidden, _value(int32_val=12)])  # fmt: skip
    return prof, seq, states


def fill(store, users: int, now_ms: int) -> float:
    """Write every user's three rows as Feast lays them out; return seconds."""
    started = time.perf_counter()
    rng = np.random.default_rng(7)
    prof_t, seq_t, state_t = _templates(now_ms, rng)
    prof, seq = view_layout(store, "user_profile"), view_layout(store, "user_realtime_seq")
    state = view_layout(store, "user_history_state")
    prof_fields = [prof.redis_ts_field, *(prof.redis_field(f) for f in ("age_bucket", "gender", "country", "segment"))]  # fmt: skip
    seq_fields = [seq.redis_ts_field, *(seq.redis_field(f) for f in ("pin_ids", "event_ts_ms", "actions", "updated_ts_ms"))]  # fmt: skip
    state_fields = [state.redis_ts_field, state.redis_field("hidden"), state.redis_field("history_len")]  # fmt: skip
    user_prefix = prof.entity_key({"user_id": 0})[:-8]
    state_prefix = state.entity_key({"model_version": VERSION, "user_id": 0})[:-8]
    project = store.project.encode()
    client = redis.Redis.from_url(f"redis://{REDIS_URL}")
    try:
        for start in range(0, users, CHUNK):
            pipe = client.pipeline(transaction=False)
            for u in range(start, min(users, start + CHUNK)):
                packed = u.to_bytes(8, "little", signed=True)
                t = u % TEMPLATES
                mapping = dict(zip(prof_fields, prof_t[t], strict=True))
                mapping.update(zip(seq_fields, seq_t[(t * 7) % TEMPLATES], strict=True))
                pipe.hset(user_prefix + packed + project, mapping=mapping)
                pipe.hset(state_prefix + packed + project, mapping=dict(zip(state_fields, state_t[t], strict=True)))  # fmt: skip
            pipe.execute()
    finally:
        client.close()
    assert redis_key(prof.entity_key({"user_id": 5}), store.project) == user_prefix + (5).to_bytes(8, "little") + project  # fmt: skip
    return time.perf_counter() - started


def publish_tiny_index(indexes: Path, now: dt.datetime) -> None:
    meta = {"model_name": MODEL, "model_version": VERSION, "built_at": now.isoformat(), "corpus_snapshot": f"corpus-{now - dt.timedelta(days=1):%Y%m%d}-bench", "sha256": {"item_tower": "0" * 64}}  # fmt: skip
    index = HnswIndex.build(np.arange(64), np.random.default_rng(1).normal(size=(64, 8)), HnswParams(M=4, ef_construction=20), 1, meta)  # fmt: skip
    staging = new_staging(indexes, MODEL)
    saved = index.save(staging)
    final = publish_index(staging, indexes, MODEL, keep=3, now=now)
    doc = {"model_name": MODEL, "model_version": VERSION, "dir": final.name, "index_sha256": saved["sha256"]["index"], "corpus_snapshot": meta["corpus_snapshot"], "published_at": now.isoformat(), "previous": None}  # fmt: skip
    write_json_atomic(model_root(indexes, MODEL) / SERVING, doc)


def record_runs(path: Path, now: dt.datetime) -> None:
    for job in ("load-profiles", "batch encode"):
        ledger.append(path, ledger.RunRecord(job=job, outcome=ledger.SUCCESS, started_at=now - dt.timedelta(hours=3), finished_at=now - dt.timedelta(hours=2), views=ledger.JOB_VIEWS[job]))  # fmt: skip


def delete_project(project: str) -> int:
    client = redis.Redis.from_url(f"redis://{REDIS_URL}")
    try:
        return delete_project_keys(client, project, page=10_000)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore", message=r"(read|open)_text is deprecated")  # kafka-python 3.0
    args = parse_args(argv)
    project = f"bench_fresh_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="towerline-bench-freshness-") as tmp:
        root = Path(tmp)
        store = open_store(online="redis", redis_url=REDIS_URL, project=project, data_dir=root / "feast")  # fmt: skip
        try:
            apply_repo(store)
            now = dt.datetime.now(dt.UTC)
            fill_s = fill(store, args.users, int(now.timestamp() * 1000))
            print(f"filled {args.users:,} users ({2 * args.users:,} hashes) in {fill_s:.1f}s")
            publish_tiny_index(root / "indexes", now)
            record_runs(root / "ledger.jsonl", now)
            sources = Sources(ledger=root / "ledger.jsonl", indexes=root / "indexes", store=store, sample=args.sample)  # fmt: skip
            started = time.perf_counter()
            snapshot = collect(sources)
            breached = check_lines(snapshot)
            check_s = time.perf_counter() - started
            started = time.perf_counter()
            snapshot = collect(sources)
            history.append(root / "history.jsonl", snapshot)
            page = render(snapshot, history.read(root / "history.jsonl"))
            write_text_atomic(root / "report.html", page)
            report_s = time.perf_counter() - started
            print(render_table(snapshot), end="")
            print(f"check: {len(breached)} breached SLOs; report: {len(page):,} bytes")
            sampled = max((m.sample or 0) for m in snapshot.measures if m.view == "user_profile")
            result = {"users": args.users, "sampled": sampled, "report_s": round(report_s, 2), "check_s": round(check_s, 2)}  # fmt: skip
        finally:
            print(f"deleted {delete_project(project):,} keys of project {project}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
