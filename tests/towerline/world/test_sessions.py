"""Planted session intent: session engagements before conversions, and their truth."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from towerline.world import WorldConfig, generate

# Two chunks, default session knobs (on), small enough for seconds.
CFG = WorldConfig(
    users=800,
    pins=1500,
    days=6,
    seed=11,
    end_date=dt.date(2025, 3, 14),
    interests=16,
    chunk_users=400,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sessions") / "w"
    generate(CFG, out, progress=False)
    return out


def _table(out: Path, name: str) -> pd.DataFrame:
    frame = pq.read_table(out / name).to_pandas()
    frame["ts_ms"] = frame["event_ts"].astype("int64")
    return frame


def _interests(out: Path) -> pd.Series:
    """pin_id -> its set of interests."""
    pins = pq.read_table(out / "pins").to_pandas()
    return pd.Series([set(ids) for ids in pins["interest_ids"]], index=pins["pin_id"])


def test_truth_has_one_row_per_conversion_in_lake_order(world: Path) -> None:
    truth = _table(world, "truth/conversions.parquet")
    lake = _table(world, "offsite_conversions").set_index("event_id")
    assert truth["event_id"].tolist() == [f"o-{i}" for i in range(len(lake))]
    joined = lake.loc[truth["event_id"]]
    for col in ("user_id", "pin_id", "ts_ms"):
        assert (joined[col].to_numpy() == truth[col].to_numpy()).all(), col
    doc = json.loads((world / "world.json").read_text())
    assert doc["truth"]["conversions"] == "truth/conversions.parquet"
    counts = doc["counts"]
    assert counts["session_conversions"] == int(truth["session"].sum())
    assert counts["explore_conversions"] == int(truth["explore"].sum())
    assert counts["session_engagement_events"] == int(truth["session_engagements"].sum())


def test_session_engagements_come_strictly_before_with_the_same_intent(world: Path) -> None:
    truth = _table(world, "truth/conversions.parquet")
    engaged = _table(world, "engagements").set_index("event_id")
    interests = _interests(world)
    session = truth[truth["session"]]
    assert len(session) > 0.5 * len(truth)
    newest = engaged.loc[session["session_event_id"]]
    assert (newest["user_id"].to_numpy() == session["user_id"].to_numpy()).all()
    # Strictly earlier in whole seconds (readers truncate to seconds), on the same UTC day.
    conv_s, eng_s = session["ts_ms"].to_numpy() // 1000, newest["ts_ms"].to_numpy() // 1000
    assert (eng_s < conv_s).all()
    assert (eng_s // 86400 == conv_s // 86400).all()
    gap_ms = session["ts_ms"].to_numpy() - newest["ts_ms"].to_numpy()
    assert (session["session_gap_ms"].to_numpy() == gap_ms).all()
    carries = [
        k in interests[p] for k, p in zip(session["interest"], newest["pin_id"], strict=True)
    ]
    assert all(carries)
    count = session["session_engagements"].to_numpy()
    assert set(count) == set(range(1, CFG.session_engagements + 1))
    assert (truth.loc[~truth["session"], "session_engagements"] == 0).all()
    assert truth.loc[~truth["session"], "session_event_id"].isna().all()


def test_every_engagement_of_a_session_carries_its_intent(world: Path) -> None:
    """The k engagements of a session are the user's k newest before the conversion (an
    ambient engagement lands inside a session's minute only rarely)."""
    truth = _table(world, "truth/conversions.parquet")
    session = truth[truth["session"]]
    engaged = _table(world, "engagements").sort_values(["user_id", "ts_ms"], kind="stable")
    carries = np.zeros((CFG.pins + 1, CFG.interests), dtype=bool)
    for pin, ids in _interests(world).items():
        carries[pin, list(ids)] = True
    # Composite (user, second) keys; the engagements before a conversion end at `end`.
    key = lambda f: f["user_id"].to_numpy() * 10**11 + f["ts_ms"].to_numpy() // 1000  # noqa: E731
    end = np.searchsorted(key(engaged), key(session), side="left")
    count = session["session_engagements"].to_numpy()
    back = np.concatenate([np.arange(1, c + 1) for c in count])
    row = np.repeat(end, count) - back
    users, pins = engaged["user_id"].to_numpy(), engaged["pin_id"].to_numpy()
    assert (row >= 0).all()
    assert (users[row] == np.repeat(session["user_id"].to_numpy(), count)).all()
    ok = carries[pins[row], np.repeat(session["interest"].to_numpy(), count)]
    assert ok.mean() > 0.99


def test_intents_follow_the_plan(world: Path) -> None:
    truth = _table(world, "truth/conversions.parquet")
    users = pq.read_table(world / "truth" / "user_interests.parquet").to_pandas()
    mixture = dict(zip(users["user_id"], users["interest_ids"].map(set), strict=True))
    explore = truth["explore"].to_numpy()
    # Only an explore session leaves the chain; noise only changes the shown interest.
    same = truth["interest"] == truth["chain_interest"]
    assert same[~explore].all()
    assert (truth["shown_interest"] == truth["interest"])[~truth["noise"]].all()
    interests = _interests(world)
    carries = [
        k in interests[p] for k, p in zip(truth["shown_interest"], truth["pin_id"], strict=True)
    ]
    assert all(carries)
    # Explore intents come from the global prior, mostly outside the user's own mixture.
    own = np.array(
        [k in mixture[u] for u, k in zip(truth["user_id"], truth["interest"], strict=True)]
    )
    assert own[~explore].all() and own[explore].mean() < 0.6
    assert abs(truth["session"].mean() - CFG.session_rate) < 0.02
    assert abs(explore.mean() - CFG.session_rate * CFG.session_explore) < 0.02
    # The newest session engagement: 2 s + Exp(mean session_gap_s) before the conversion.
    gap_s = truth["session_gap_ms"].dropna().to_numpy() / 1000
    assert gap_s.min() >= 2 and abs(gap_s.mean() - (2 + CFG.session_gap_s)) < 3


def test_sessions_only_detour_the_explore_conversions(world: Path, tmp_path: Path) -> None:
    """Sessions draw from their own random stream: without them the same conversions happen
    at the same times, and only the explore conversions' pins change."""
    generate(dataclasses.replace(CFG, session_rate=0.0), tmp_path / "quiet", progress=False)
    quiet = _table(tmp_path / "quiet", "truth/conversions.parquet")
    truth = _table(world, "truth/conversions.parquet")
    for col in ("event_id", "user_id", "ts_ms", "chain_interest", "noise"):
        assert (quiet[col] == truth[col]).all(), col
    assert not quiet["session"].any() and (quiet["interest"] == quiet["chain_interest"]).all()
    moved = (quiet["pin_id"] != truth["pin_id"]).to_numpy()
    assert not moved[~truth["explore"].to_numpy()].any()
    assert moved[truth["explore"].to_numpy()].mean() > 0.5
    quiet_eng = pq.read_table(tmp_path / "quiet" / "engagements").num_rows
    assert pq.read_table(world / "engagements").num_rows == (
        quiet_eng + truth["session_engagements"].sum()
    )


def test_same_seed_gives_the_same_truth_and_sessions(world: Path, tmp_path: Path) -> None:
    generate(CFG, tmp_path / "again", progress=False)
    for name in ("truth/conversions.parquet", "engagements", "offsite_conversions"):
        again = pq.read_table(tmp_path / "again" / name).sort_by("event_id")
        assert again.equals(pq.read_table(world / name).sort_by("event_id")), name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session_rate", -0.1),
        ("session_rate", 1.5),
        ("session_explore", float("nan")),
        ("session_explore", 2),
        ("session_engagements", 0),
        ("session_engagements", 1.5),
        ("session_engagements", True),
        ("session_gap_s", 0.0),
        ("session_gap_s", 7200.0),
    ],
)
def test_bad_session_knob_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"WorldConfig\.{field}\b"):
        dataclasses.replace(CFG, **{field: value})


def test_config_round_trips_through_world_json(world: Path) -> None:
    doc = json.loads((world / "world.json").read_text())
    assert WorldConfig.from_json(doc["config"]) == CFG
