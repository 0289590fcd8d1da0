"""The pure pieces behind /v1/retrieve's fast path give exactly what the plain code gives:
the response body, the demographic codes, the traced online tower."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.config import ModelConfig
from model.tables import encode_demographics
from model.towers import OnlineTower
from serving.app import retrieve_body
from serving.features import _demographics, _since_last_s
from serving.retrieve import Answer
from serving.versions import trace_online
from towerline.core.contracts import AGE_BUCKETS, GENDERS, USER_PROFILE, VIEW_FEATURES


@pytest.mark.parametrize("k", [0, 1, 100])
def test_retrieve_body_is_what_json_dumps_writes(k: int) -> None:
    rng = np.random.default_rng(k)
    ids = rng.integers(1, 10**9, k).astype(np.int64)
    scores = (rng.random(k, dtype=np.float32) * 2 - 1).astype(np.float32)
    answer = Answer('v"1\\é', "2025-06-30T00:00:00+00:00", "missing", "none", ids, scores)
    doc = {
        "model_version": answer.model_version,
        "index_built_at": answer.index_built_at,
        "history": answer.history,
        "context": answer.context,
        "candidates": [
            {"pin_id": p, "score": s} for p, s in zip(ids.tolist(), scores.tolist(), strict=True)
        ],
    }
    assert retrieve_body(answer) == json.dumps(doc, separators=(",", ":"))


def test_demographics_match_the_vectorised_encoder() -> None:
    cfg = ModelConfig.for_data(1000, 50)
    rng = np.random.default_rng(3)
    values = {
        "age_bucket": [*AGE_BUCKETS, "", "not-an-age"],
        "gender": [*GENDERS, "", "?"],
        "country": ["US", "GB", "", "ZZ", "DE"],
        "segment": [f"segment_{i}" for i in range(40)] + [""],
    }
    profiles = [
        None
        if rng.random() < 0.2
        else {f: None if rng.random() < 0.1 else v[rng.integers(len(v))] for f, v in values.items()}
        for _ in range(300)
    ]
    want = np.zeros((len(profiles), 4), np.int64)
    present = np.array([p is not None for p in profiles])
    found = [p for p in profiles if p is not None]
    columns = ([p.get(f) or "" for p in found] for f in VIEW_FEATURES[USER_PROFILE])
    want[present] = encode_demographics(*columns, cfg.country_buckets, cfg.segment_buckets)
    assert (_demographics(profiles, cfg) == want).all()
    assert (want[~present] == 0).all() and want[present].any()


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_the_traced_tower_equals_the_module(batch: int) -> None:
    cfg = ModelConfig.for_data(5000, 100)
    tower = OnlineTower(cfg).eval()
    traced = trace_online(tower, cfg)
    g = torch.Generator().manual_seed(batch)
    n = cfg.realtime_len
    inputs = (
        torch.randn(batch, cfg.d_model, generator=g),
        torch.randint(-2, 120, (batch, 3), generator=g),
        torch.rand(batch, 3, generator=g),
        torch.randint(0, 4, (batch, 4), generator=g),
        torch.randint(1, 10**6, (batch, n), generator=g),
        torch.rand(batch, n, generator=g) > 0.5,
        torch.randint(-1, 10**7, (batch,), generator=g),
    )
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        got = traced(*inputs)
    with torch.inference_mode():
        want = tower(*inputs)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_the_request_gap_is_seconds_from_the_states_newest_event() -> None:
    has_state = np.array([True, True, True, False])
    newest = [10_000, None, 99_000, 5_000]  # None: a row written before the field existed
    got = _since_last_s(newest, has_state, now_ms=70_500)
    # 60.5 s -> 60; unknown -> -1; a clock behind the state -> 0; no state -> -1
    assert got.tolist() == [60, -1, 0, -1] and got.dtype == np.int64
