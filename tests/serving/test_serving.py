"""`towerline serve` against a real index, registry and Feast store, over real HTTP."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import requests
import torch

from batch.publish import publish, rollback
from model.artifacts import load_encoder, load_online
from model.lake_io import read_pins, read_users
from serving.config import ServeConfig
from tests.serving.conftest import END, World, running_server, wait_ready
from towerline.core.ann import SERVING, list_indexes, model_root
from towerline.core.ann.interests import PinInterests


@pytest.fixture
def indexes(served_world: World, tmp_path: Path) -> Path:
    """A private copy of the index store: tests publish and break things in it."""
    return Path(shutil.copytree(served_world.indexes, tmp_path / "indexes"))


def serve_cfg(world: World, indexes: Path, **kw) -> ServeConfig:
    return ServeConfig(indexes=indexes, registry=world.registry, poll_s=0.1, **kw)


def offline_embedding(world: World, version: str, user: int, subject: int | None, realtime: list[int]) -> np.ndarray:  # fmt: skip
    """The user embedding computed from the lake with the registry's tower of ``version``."""
    tower = load_online(world.registry, version)
    cfg = tower.context.cfg
    states = ds.dataset(world.lake / "user_history_state" / f"dt={END.isoformat()}" / version)
    row = states.to_table(filter=pc.field("user_id") == user).to_pylist()
    hidden = np.asarray(row[0]["hidden"], np.float32) if row else load_encoder(world.registry, version).empty.detach().numpy()  # fmt: skip
    pins = read_pins(world.lake)
    if subject is None:
        ids, conf = np.full((1, 3), -1, np.int64), np.zeros((1, 3), np.float32)
    else:
        ids, conf = pins.lookup(np.array([subject]))
    demo = read_users(world.lake, cfg).lookup(np.array([user]))
    # Served at wall-clock time, ~a year after the world's last day: the gap's log2
    # bucket is the same for the request a moment later.
    since = (int(time.time() * 1000) - row[0]["last_event_ts_ms"]) // 1000 if row else -1
    n = cfg.realtime_len
    rt = np.zeros((1, n), np.int64)
    mask = np.zeros((1, n), bool)
    last = realtime[-n:]
    if last:
        rt[0, n - len(last) :], mask[0, n - len(last) :] = last, True
    with torch.inference_mode():
        out = tower(
            torch.from_numpy(hidden[None]),
            torch.from_numpy(ids),
            torch.from_numpy(conf),
            torch.from_numpy(demo),
            torch.from_numpy(rt),
            torch.from_numpy(mask),
            torch.tensor([since]),
        )
    return out.numpy()[0]


def post(url: str, path: str, body: dict) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=10)


def test_readyz_waits_for_a_published_version(served_world: World, indexes: Path) -> None:
    pointer = model_root(indexes, "two_tower") / SERVING
    saved = pointer.read_text()
    pointer.unlink()
    with running_server(serve_cfg(served_world, indexes), served_world.store) as url:
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 503
        assert post(url, "/v1/retrieve", {"user_id": 1}).status_code == 503
        pointer.write_text(saved)
        assert wait_ready(url)["model_version"] == "v1"


def test_served_embedding_equals_the_offline_one(served_world: World, indexes: Path) -> None:
    subject = served_world.pins[5]
    with running_server(serve_cfg(served_world, indexes), served_world.store) as url:
        wait_ready(url)
        for user, realtime in ((3, list(range(100, 115))), (40, [])):
            got = post(url, "/v1/user-embedding", {"user_id": user, "subject_pin_id": subject})
            assert got.status_code == 200, got.text
            body = got.json()
            assert (body["model_version"], body["history"], body["context"]) == ("v1", "cached", "subject_pin")  # fmt: skip
            want = offline_embedding(served_world, "v1", user, subject, realtime)
            np.testing.assert_allclose(body["embedding"], want, atol=1e-5)


def test_a_user_without_state_gets_the_learned_empty_state(served_world: World, indexes: Path) -> None:  # fmt: skip
    with running_server(serve_cfg(served_world, indexes), served_world.store) as url:
        wait_ready(url)
        body = post(url, "/v1/user-embedding", {"user_id": 987_654}).json()
        assert (body["history"], body["context"]) == ("missing", "none")
        want = offline_embedding(served_world, "v1", 987_654, None, [])
        np.testing.assert_allclose(body["embedding"], want, atol=1e-5)
        answer = post(url, "/v1/retrieve", {"user_id": 987_654, "k": 10}).json()
        assert answer["history"] == "missing" and len(answer["candidates"]) == 10


def test_rules_return_k_qualifying_candidates(served_world: World, indexes: Path) -> None:
    index_dir = model_root(indexes, "two_tower") / json.loads((model_root(indexes, "two_tower") / SERVING).read_text())["dir"]  # fmt: skip
    interests = PinInterests.load(index_dir)
    counts = np.bincount(interests.interest_ids[interests.interest_ids >= 0])
    rare = int(np.flatnonzero(counts >= 12)[np.argmin(counts[counts >= 12])])
    with running_server(serve_cfg(served_world, indexes), served_world.store) as url:
        wait_ready(url)
        body = post(url, "/v1/retrieve", {"user_id": 7, "k": 12, "interests": [rare]}).json()
        got = [c["pin_id"] for c in body["candidates"]]
        assert len(got) == 12 and len(set(got)) == 12
        assert all(rare in interests.lookup(np.array([p]))[0] for p in got)
        seen = post(url, "/v1/retrieve", {"user_id": 3, "k": 50}).json()["candidates"]
        assert not {c["pin_id"] for c in seen} & set(range(100, 115))
        capped = post(url, "/v1/retrieve", {"user_id": 7, "k": 20, "max_per_interest": 2}).json()
        firsts = interests.lookup(np.array([c["pin_id"] for c in capped["candidates"]]))[:, 0]
        assert len(firsts) == 20 and np.bincount(firsts[firsts >= 0]).max() <= 2
        scores = [c["score"] for c in capped["candidates"]]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": 1, "k": 0}, "k"),
        ({"user_id": 1, "k": 1001}, "k"),
        ({"user_id": "abc"}, "user_id"),
        ({"user_id": 1, "interests": []}, "interests"),
        ({"user_id": 1, "nope": 1}, "nope"),
    ],
)
def test_bad_requests_name_the_field(served_world: World, indexes: Path, body: dict, field: str) -> None:  # fmt: skip
    with running_server(serve_cfg(served_world, indexes), served_world.store) as url:
        got = post(url, "/v1/retrieve", body)
        assert got.status_code == 422
        assert field in [d["field"] for d in got.json()["detail"]]
        view = post(url, "/v1/features", {"view": "users", "entities": [{"user_id": 1}]})
        assert view.status_code == 422 and view.json()["detail"][0]["field"] == "view"
        huge = requests.post(f"{url}/v1/retrieve", data=b"x" * 100_000, headers={"content-type": "application/json"}, timeout=10)  # fmt: skip
        assert huge.status_code == 413


def test_feature_lookups_carry_time_and_age(served_world: World, indexes: Path) -> None:
    with running_server(serve_cfg(served_world, indexes), served_world.store) as url:
        wait_ready(url)
        rows = post(url, "/v1/features", {"view": "user_realtime_seq", "entities": [{"user_id": 3}, {"user_id": 999_999}]}).json()["rows"]  # fmt: skip
        assert rows[0]["found"] and rows[0]["features"]["pin_ids"] == list(range(100, 115))
        assert 0 <= rows[0]["age_s"] < 600 and not rows[1]["found"]
        state = post(url, "/v1/features", {"view": "user_history_state", "entities": [{"user_id": 3}]}).json()  # fmt: skip
        assert state["rows"][0]["entity"] == {"user_id": 3, "model_version": "v1"}
        assert len(state["rows"][0]["features"]["hidden"]) == 16


def _index_built_at(indexes: Path) -> dict[str, str]:
    return {meta["model_version"]: meta["built_at"] for _, meta in list_indexes(indexes, "two_tower")}  # fmt: skip


def test_publish_and_rollback_under_load_fail_no_request(served_world: World, indexes: Path) -> None:  # fmt: skip
    built = _index_built_at(indexes)
    answers: list[tuple[str, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(user: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                got = session.post(f"{url}/v1/retrieve", json={"user_id": user, "subject_pin_id": served_world.pins[user], "k": 20}, timeout=10)  # fmt: skip
                if got.status_code != 200 or len(got.json()["candidates"]) != 20:
                    failures.append(got.text)
                else:
                    answers.append((got.json()["model_version"], got.json()["index_built_at"]))

    def served_version_becomes(version: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if answers and answers[-1][0] == version:
                return
            time.sleep(0.05)
        raise AssertionError(f"serving never switched to {version}")

    cfg = serve_cfg(served_world, indexes)
    with running_server(cfg, served_world.store) as url:
        wait_ready(url)
        threads = [threading.Thread(target=client, args=(u,)) for u in (1, 2, 5, 9)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            publish("v2", served_world.registry, indexes, served_world.lake, served_world.store)
            served_version_becomes("v2")
            time.sleep(0.3)
            rollback(served_world.registry, indexes, served_world.lake, served_world.store)
            served_version_becomes("v1")
            time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert not failures, failures[:3]
    versions = [v for v, _ in answers]
    assert {"v1", "v2"} <= set(versions) and len(answers) > 50
    assert all(built[version] == built_at for version, built_at in answers)
    assert 'towerline_serving_model_version_info{model_name="two_tower",model_version="v1"} 1.0' in metrics  # fmt: skip
    assert "towerline_serving_version_swaps_total 3.0" in metrics
    for stage in ("features", "tower", "ann", "filters"):
        assert f'towerline_serving_stage_seconds_count{{stage="{stage}"}}' in metrics


def test_a_broken_publish_is_refused_and_the_old_version_keeps_serving(served_world: World, indexes: Path) -> None:  # fmt: skip
    root = model_root(indexes, "two_tower")
    pointer = json.loads((root / SERVING).read_text())
    v2 = next(path for path, meta in list_indexes(indexes, "two_tower") if meta["model_version"] == "v2")  # fmt: skip
    broken = root / f"{v2.name}-broken"
    shutil.copytree(v2, broken)
    with open(broken / "index.bin", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff" * 16)
    with running_server(serve_cfg(served_world, indexes), served_world.store) as url:
        wait_ready(url)
        bad = {**pointer, "model_version": "v2", "dir": broken.name}
        (root / SERVING).write_text(json.dumps(bad))
        deadline = time.monotonic() + 10
        while "towerline_serving_versions_refused_total 1.0" not in requests.get(f"{url}/metrics", timeout=5).text:  # fmt: skip
            assert time.monotonic() < deadline, "the broken publish was not refused"
            time.sleep(0.05)
        body = post(url, "/v1/retrieve", {"user_id": 1, "k": 5}).json()
        assert body["model_version"] == "v1" and len(body["candidates"]) == 5


def test_concurrent_requests_share_micro_batches(served_world: World, indexes: Path) -> None:
    cfg = serve_cfg(served_world, indexes, batch_window_ms=20.0)
    with running_server(cfg, served_world.store) as url:
        wait_ready(url)
        threads = [threading.Thread(target=post, args=(url, "/v1/retrieve", {"user_id": u, "k": 5})) for u in range(16)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = requests.get(f"{url}/metrics", timeout=5).text
    count = float(metrics.split('towerline_serving_batch_size_count{endpoint="retrieve"} ')[1].split()[0])  # fmt: skip
    assert count < 16, "16 concurrent requests were not batched together"


def test_pin_engagement_is_decayed_to_the_request_time(served_world: World, indexes: Path) -> None:  # fmt: skip
    import datetime as dt

    import pyarrow as pa

    from towerline.core.contracts import HALF_LIFE_TAG, PIN_ENGAGEMENT
    from towerline.core.featurestore import record_tag, write_online

    day_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    row = {"pin_id": [served_world.pins[0]], "decayed_closeup": [8.0], "decayed_click": [4.0]}
    row |= {"decayed_save": [0.0], "decayed_share": [2.0], "event_timestamp": [day_ago]}
    row["last_event_ts_ms"] = [int(day_ago.timestamp() * 1000)]
    write_online(served_world.store, PIN_ENGAGEMENT, pa.table(row))
    record_tag(served_world.store, PIN_ENGAGEMENT, HALF_LIFE_TAG, "86400.0")
    with running_server(serve_cfg(served_world, indexes), served_world.store) as url:
        body = post(url, "/v1/features", {"view": "pin_engagement", "entities": [{"pin_id": served_world.pins[0]}]}).json()  # fmt: skip
    features = body["rows"][0]["features"]
    assert features["decayed_to"] is not None
    assert features["decayed_closeup"] == pytest.approx(4.0, rel=1e-3)
    assert features["decayed_click"] == pytest.approx(2.0, rel=1e-3)
    assert 86_000 < body["rows"][0]["age_s"] < 87_000
