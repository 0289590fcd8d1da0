"""The online half of `towerline demo`: serve the published version over HTTP, ask it one
request of each kind, then publish a second version and roll back while a client keeps
asking, and show that the served version changed without a failed request."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import feast
import requests

POLL_S = 0.2  # how often the demo server checks serving.json


def serve_and_swap(
    workdir: Path,
    lake: Path,
    day: dt.date,
    store: feast.FeatureStore,
    publish_second: Callable[[], str],
    roll_back: Callable[[], str],
) -> dict[str, Any]:
    """Requests of each kind against the published version, then a publish and a rollback
    under continuous requests. ``publish_second`` / ``roll_back`` return the version they
    made live."""
    from serving.app import create_app
    from serving.config import ServeConfig
    from serving.server import server_thread

    cfg = ServeConfig(indexes=workdir / "indexes", registry=workdir / "registry", poll_s=POLL_S)
    with server_thread(create_app(cfg, store)) as url, requests.Session() as session:
        ready = _wait_ready(session, url)
        asked = _one_of_each(session, url, store)
        swaps = _swap_under_load(url, ready["model_version"], publish_second, roll_back)
    return {"url": url, "requests": asked, "swaps": swaps}


def _wait_ready(session: requests.Session, url: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        answer = session.get(f"{url}/readyz", timeout=5)
        if answer.status_code == 200:
            return answer.json()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo server was not ready: {answer.text}")
        time.sleep(0.05)


def _one_of_each(session: requests.Session, url: str, store: feast.FeatureStore) -> list[dict]:
    user, subject, interest = _a_user_with_history(store)
    cases = [
        (
            "retrieve, subject pin",
            "/v1/retrieve",
            {"user_id": user, "subject_pin_id": subject, "k": 10},
        ),  # fmt: skip
        ("retrieve, no subject pin", "/v1/retrieve", {"user_id": user, "k": 10}),
        (
            f"retrieve, interest {interest} only",
            "/v1/retrieve",
            {"user_id": user, "k": 10, "interests": [interest]},
        ),  # fmt: skip
        ("retrieve, unknown user", "/v1/retrieve", {"user_id": 10**12, "k": 10}),
        (
            "features: user_realtime_seq",
            "/v1/features",
            {"view": "user_realtime_seq", "entities": [{"user_id": user}]},
        ),  # fmt: skip
    ]
    rows = []
    for title, path, body in cases:
        t0 = time.perf_counter()
        answer = session.post(f"{url}{path}", json=body, timeout=10)
        ms = (time.perf_counter() - t0) * 1000
        answer.raise_for_status()
        rows.append({"request": title, "ms": round(ms, 1), **_gist(answer.json())})
    return rows


def _gist(body: dict[str, Any]) -> dict[str, Any]:
    if "candidates" in body:
        top = ", ".join(str(c["pin_id"]) for c in body["candidates"][:3])
        return {
            "version": body["model_version"],
            "history": body["history"],
            "context": body["context"],
            "answer": f"{len(body['candidates'])} pins, top {top}",
        }
    row = body["rows"][0]
    pins = row["features"].get("pin_ids") or []
    return {
        "version": "-",
        "history": "-",
        "context": "-",
        "answer": f"{len(pins)} recent pins, age {row['age_s']:.1f}s",
    }


def _a_user_with_history(store: feast.FeatureStore) -> tuple[int, int, int]:
    """A user with a real-time sequence, its newest pin (the subject) and that pin's interest."""
    from towerline.core.featurestore import read_online

    for user in range(1, 200):
        seq = read_online(store, ["user_realtime_seq:pin_ids"], [{"user_id": user}])["pin_ids"][0]
        if seq:
            subject = int(seq[-1])
            ids = read_online(store, ["pin_profile:interest_ids"], [{"pin_id": subject}])
            interests = ids["interest_ids"][0] or [0]
            return user, subject, int(interests[0])
    return 1, 1, 0


def _swap_under_load(
    url: str, first: str, publish_second: Callable[[], str], roll_back: Callable[[], str]
) -> dict[str, Any]:
    """A client asks continuously while ``publish_second`` and ``roll_back`` run."""
    seen: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                answer = session.post(f"{url}/v1/retrieve", json={"user_id": 1, "k": 10}, timeout=10)  # fmt: skip
                if answer.status_code == 200:
                    seen.append(answer.json()["model_version"])
                else:
                    failed.append(answer.text)

    def until_served(version: str) -> float:
        t0 = time.monotonic()
        while not (seen and seen[-1] == version):
            if time.monotonic() - t0 > 30:
                raise TimeoutError(f"serving did not switch to {version}")
            time.sleep(0.02)
        return round(time.monotonic() - t0, 2)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        second = publish_second()
        to_second = until_served(second)
        back = roll_back()
        to_back = until_served(back)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=10)
    order = [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v]
    return {
        "served": " → ".join(order),
        "requests": len(seen) + len(failed),
        "failed": len(failed),
        "switch_seconds": {second: to_second, back: to_back},
        "first": first,
    }
