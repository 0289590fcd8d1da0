"""The synthetic world: contract schemas, determinism and the planted structure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from schemas.arrow import LAKE_TABLES
from towerline.core.contracts import CONVERSION_ACTIONS, ENGAGEMENT_ACTIONS
from towerline.core.errors import InputError
from towerline.world import WorldConfig, generate, pipeline

# Tiny but structured: 3 chunks, 16 interests, enough trending pins to see their bumps.
CFG = WorldConfig(
    users=3000,
    pins=2000,
    days=14,
    seed=7,
    end_date=dt.date(2025, 3, 14),
    interests=16,
    trending_rate=0.02,
    chunk_users=1000,
)
EVENT_TABLES = ("offsite_conversions", "engagements")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("world") / "w"
    return out, generate(CFG, out, progress=False)


def _files(out: Path, table: str) -> list[Path]:
    """Parquet files of ``table``, day by day then chunk by chunk."""
    key = lambda p: (p.parent.name, int(p.stem.split("-")[1]))  # noqa: E731
    return sorted((out / table).rglob("*.parquet"), key=key)


def _read(out: Path, table: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in _files(out, table)])


def _primary(out: Path) -> np.ndarray:
    """(P + 1,) primary interest by pin_id (index 0 unused)."""
    pins = pq.read_table(out / "pins")
    first = pc.list_element(pins.column("interest_ids"), 0)
    return np.concatenate(([-1], first.to_numpy()))


def test_summary_and_layout(world: tuple[Path, dict]) -> None:
    out, summary = world
    assert summary["users"] == 3000 and summary["pins"] == 2000 and summary["days"] == 14
    assert summary["out"] == str(out) and summary["seconds"] >= 0
    days = [f"dt={CFG.end_date - dt.timedelta(days=d)}" for d in range(CFG.days)]
    for table in EVENT_TABLES:
        assert sorted(p.name for p in (out / table).iterdir()) == sorted(days)
    doc = json.loads((out / "world.json").read_text())
    assert doc["counts"]["offsite_events"] == summary["offsite_events"]
    assert doc["counts"]["engagement_events"] == summary["engagement_events"]
    assert doc["interests"]["count"] == 16 and doc["config"]["seed"] == 7
    for rel in doc["truth"].values():
        assert (out / rel).is_file()


def test_every_file_matches_its_contract_schema(world: tuple[Path, dict]) -> None:
    out, _ = world
    for table in ("offsite_conversions", "engagements", "pins", "users"):
        files = list((out / table).rglob("*.parquet"))
        assert files
        for path in files:
            assert pq.read_schema(path).equals(LAKE_TABLES[table]), path


def test_same_config_and_seed_give_identical_tables(
    world: tuple[Path, dict], tmp_path: Path
) -> None:
    out, _ = world
    again = generate(CFG, tmp_path / "again", progress=True)
    for table in (*EVENT_TABLES, "pins", "users"):
        assert _read(tmp_path / "again", table).equals(_read(out, table)), table
    other = generate(dataclasses.replace(CFG, seed=8), tmp_path / "other", progress=False)
    assert other["offsite_events"] != again["offsite_events"]


def test_offsite_history_per_user(world: tuple[Path, dict]) -> None:
    out, _ = world
    events = _read(out, "offsite_conversions")
    users = events.column("user_id").to_numpy()
    assert np.bincount(users, minlength=CFG.users + 1)[1:].min() >= 2
    assert abs(len(users) / CFG.users - CFG.offsite_per_user) < 3
    # File order (day, then user, then time) re-grouped by user must be time-ordered.
    order = np.argsort(users, kind="stable")
    ts = events.column("event_ts").cast(pa.int64()).to_numpy()[order]
    same_user = users[order][1:] == users[order][:-1]
    assert (np.diff(ts)[same_user] >= 0).all()


def test_events_fall_on_their_partition_day(world: tuple[Path, dict]) -> None:
    out, _ = world
    ids = []
    for table in EVENT_TABLES:
        for path in _files(out, table):
            part = pq.read_table(path)
            day = dt.date.fromisoformat(path.parent.name.removeprefix("dt="))
            dates = part.column("event_ts").cast(pa.date32()).to_pylist()
            assert set(dates) <= {day}, path
            ids.append(part.column("event_id"))
            pin_ids = part.column("pin_id").to_numpy()
            assert pin_ids.size == 0 or (pin_ids.min() >= 1 and pin_ids.max() <= CFG.pins)
    all_ids = pa.chunked_array(ids)
    assert len(all_ids.unique()) == len(all_ids)


def test_action_mix_is_skewed(world: tuple[Path, dict]) -> None:
    out, _ = world
    for table, symbols in zip(EVENT_TABLES, (CONVERSION_ACTIONS, ENGAGEMENT_ACTIONS), strict=True):
        actions = _read(out, table).column("action").to_numpy(zero_copy_only=False)
        counts = [int((actions == s).sum()) for s in symbols]
        assert sum(counts) == len(actions)
        assert counts[0] == max(counts) and counts[-1] == min(counts), (table, counts)


def test_pins_have_one_to_three_sorted_interests(world: tuple[Path, dict]) -> None:
    out, _ = world
    pins = pq.read_table(out / "pins").to_pydict()
    assert pins["pin_id"] == list(range(1, CFG.pins + 1))
    for ids, conf in zip(pins["interest_ids"], pins["interest_confidences"], strict=True):
        assert 1 <= len(ids) <= 3 and len(conf) == len(ids) and len(set(ids)) == len(ids)
        assert all(0 <= i < CFG.interests for i in ids)
        assert all(0 < c <= 1 for c in conf) and conf == sorted(conf, reverse=True)
    assert {len(ids) for ids in pins["interest_ids"]} == {1, 2, 3}


def test_near_duplicates_share_signature_and_interests(world: tuple[Path, dict]) -> None:
    out, _ = world
    pins = pq.read_table(out / "pins").to_pandas()
    truth = pq.read_table(out / "truth" / "pins.parquet").to_pandas()
    dup = truth["original_pin_id"].notna().to_numpy()
    assert dup.sum() == round(CFG.duplicate_rate * CFG.pins)
    sig = pins["image_signature"]
    assert sig.str.fullmatch(r"[0-9a-f]{16}").all()
    assert sig.nunique() == CFG.pins - dup.sum()  # all other signatures unique
    orig = truth.loc[dup, "original_pin_id"].astype(int).to_numpy() - 1
    assert (sig.to_numpy()[dup] == sig.to_numpy()[orig]).all()
    ids = pins["interest_ids"].map(tuple).to_numpy()
    assert (ids[dup] == ids[orig]).all()
    doc = json.loads((out / "world.json").read_text())
    assert doc["duplicates"] == {"pins": int(dup.sum()), "groups": len(set(orig))}


def _sticky_gap(out: Path) -> float:
    """Share of consecutive offsite pairs with the same primary interest, minus the same
    share after shuffling each user's events (what the mixture alone gives)."""
    events = _read(out, "offsite_conversions").sort_by([("user_id", "ascending")])
    users = events.column("user_id").to_numpy()
    primary = _primary(out)[events.column("pin_id").to_numpy()]
    same_user = users[1:] == users[:-1]
    shuffled = primary[np.lexsort((np.random.default_rng(0).random(len(users)), users))]
    share = lambda p: (p[1:] == p[:-1])[same_user].mean()  # noqa: E731
    return float(share(primary) - share(shuffled))


def test_stickiness_makes_the_previous_pin_informative(tmp_path: Path) -> None:
    # Without sessions, whose explore detours break runs on purpose (test_sessions.py).
    quiet = dataclasses.replace(CFG, session_rate=0.0, users=1000, chunk_users=1000)
    generate(quiet, tmp_path / "sticky", progress=False)
    assert _sticky_gap(tmp_path / "sticky") > 0.06
    generate(dataclasses.replace(quiet, stickiness=0.0), tmp_path / "plain", progress=False)
    assert abs(_sticky_gap(tmp_path / "plain")) < 0.02


def test_trending_pins_peak_near_their_peak_day(world: tuple[Path, dict]) -> None:
    out, _ = world
    doc = json.loads((out / "world.json").read_text())
    trending = {t["pin_id"]: t["peak_day_index"] for t in doc["trending"]}
    assert len(trending) == round(CFG.trending_rate * CFG.pins)
    days = np.zeros((CFG.pins + 1, CFG.days), dtype=np.int64)
    first = np.datetime64(doc["first_date"], "D")
    for table in EVENT_TABLES:
        events = _read(out, table)
        day = events.column("event_ts").to_numpy().astype("datetime64[D]") - first
        np.add.at(days, (events.column("pin_id").to_numpy(), day.astype(np.int64)), 1)
    off = np.array([days[p].argmax() - peak for p, peak in trending.items()])
    assert np.mean(np.abs(off) <= CFG.trending_width_days) > 0.8, off


def test_user_truth_covers_every_user(world: tuple[Path, dict]) -> None:
    out, _ = world
    truth = pq.read_table(out / "truth" / "user_interests.parquet").to_pydict()
    assert truth["user_id"] == list(range(1, CFG.users + 1))
    sizes = {len(ids) for ids in truth["interest_ids"]}
    assert sizes <= {1, 2, 3, 4} and 1 in sizes and 4 in sizes
    for weights, drift in zip(truth["weights"], truth["drift"], strict=True):
        assert abs(sum(weights) - 1) < 1e-5 and len(drift) == len(weights)
    users = pq.read_table(out / "users").column("user_id").to_pylist()
    assert users == truth["user_id"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("users", 0),
        ("pins", 8),  # fewer pins than interests
        ("days", 0),
        ("seed", -1),
        ("interests", 0),
        ("end_date", "2025-03-14"),
        ("end_date", dt.datetime(2025, 3, 14)),
        ("zipf_exponent", 0.0),
        ("duplicate_rate", 0.9),
        ("trending_rate", -0.1),
        ("max_user_interests", 0),
        ("offsite_per_user", 0),
        ("min_offsite", 0),
        ("stickiness", 1.5),
        ("noise_rate", float("nan")),
        ("engagement_rate", -1.0),
        ("conversion_action_probs", (0.5, 0.5)),
        ("engagement_action_probs", (0.5, 0.5, 0.5, -0.5)),
        ("chunk_users", 0),
        ("users", True),
    ],
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"WorldConfig\.{field}\b"):
        dataclasses.replace(CFG, **{field: value})


def test_refuses_a_non_empty_out_dir(tmp_path: Path) -> None:
    (tmp_path / "stale.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="not an empty directory"):
        generate(dataclasses.replace(CFG, users=10), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stale.parquet"]


def test_an_empty_out_dir_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    generate(dataclasses.replace(CFG, users=10, days=2), out, progress=False)
    assert (out / "world.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"], "no staging dir left behind"


def test_a_failed_run_leaves_nothing_at_out(tmp_path: Path, monkeypatch) -> None:
    """A failure after some days were written leaves neither out nor a staging dir."""
    real = pipeline._chunk
    calls = []

    def fail_on_second_chunk(run, chunk, user_ids):
        calls.append(chunk)
        if chunk == 1:
            run.writer.drain()  # the first chunk's day files are on disk by now
            raise KeyboardInterrupt
        return real(run, chunk, user_ids)

    monkeypatch.setattr(pipeline, "_chunk", fail_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        generate(CFG, tmp_path / "w", progress=False)
    assert calls == [0, 1]
    assert list(tmp_path.iterdir()) == []
