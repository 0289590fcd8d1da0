"""The planted oracle scores pins by the generator's own probability given the truth."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from towerline.core.errors import InputError
from towerline.world import WorldConfig, generate
from towerline.world import sample as S
from towerline.world.oracle import Oracle, load_oracle, pin_scores
from towerline.world.pins import build_pools, sample_catalog

CFG = WorldConfig(
    users=400,
    pins=1200,
    days=5,
    seed=3,
    end_date=dt.date(2025, 3, 14),
    interests=12,
    trending_rate=0.02,
    chunk_users=400,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Oracle]:
    out = tmp_path_factory.mktemp("oracle") / "w"
    generate(CFG, out, progress=False)
    return out, load_oracle(out)


@pytest.fixture(scope="module")
def truth(world: tuple[Path, Oracle]) -> dict[str, np.ndarray]:
    table = pq.read_table(world[0] / "truth" / "conversions.parquet")
    out = {name: table.column(name).to_numpy() for name in table.column_names if name != "event_ts"}
    out["ts_ms"] = table.column("event_ts").cast(pa.int64()).to_numpy()
    return out


def _carries(out: Path) -> np.ndarray:
    """(P + 1, K) bool: pin_id carries interest k."""
    pins = pq.read_table(out / "pins").to_pydict()
    carries = np.zeros((CFG.pins + 1, CFG.interests), dtype=bool)
    for pin, ids in zip(pins["pin_id"], pins["interest_ids"], strict=True):
        carries[pin, ids] = True
    return carries


def test_pools_read_back_are_the_generators(world: tuple[Path, Oracle]) -> None:
    _, oracle = world
    ref = build_pools(sample_catalog(S.rng_for(CFG.seed, S.STREAM_CATALOG), CFG), CFG)
    assert np.array_equal(oracle.pools.pin, ref.pin)
    assert all(np.array_equal(a, b) for a, b in zip(oracle.pools.cdf, ref.cdf, strict=True))
    for day in range(CFG.days):
        prob = oracle.pools.probabilities(day)
        assert (prob > 0).all()
        per_interest = np.bincount(oracle.pools.interest, weights=prob)
        assert np.allclose(per_interest, 1.0)


def test_scores_are_the_generators_distribution(world: tuple[Path, Oracle], truth) -> None:
    _, oracle = world
    rows = np.arange(0, len(truth["user_id"]), 97)
    pins = np.arange(1, CFG.pins + 1)
    scores = oracle.scores(truth["user_id"][rows], truth["ts_ms"][rows] // 1000, pins)
    assert scores.shape == (len(rows), CFG.pins)
    assert np.allclose(scores.sum(axis=1), 1.0)  # a distribution over every pin
    # Columns follow the catalogue given; a pin id the world lacks scores 0.
    shuffled = np.random.default_rng(0).permutation(np.append(pins, CFG.pins + 5))
    again = oracle.scores(truth["user_id"][rows], truth["ts_ms"][rows] // 1000, shuffled)
    assert np.array_equal(
        again[:, shuffled <= CFG.pins], scores[:, shuffled[shuffled <= CFG.pins] - 1]
    )
    assert (again[:, shuffled > CFG.pins] == 0).all()


def test_the_planted_intents_pins_rank_first(world: tuple[Path, Oracle], truth) -> None:
    """On explore conversions (intent != chain) the top pins carry the intent, so an oracle
    that read the chain, or popularity, instead of the truth would fail here."""
    out, oracle = world
    explore = np.flatnonzero(truth["explore"] & (truth["interest"] != truth["chain_interest"]))
    assert len(explore) > 100
    pins = np.arange(1, CFG.pins + 1)
    scores = oracle.scores(truth["user_id"][explore], truth["ts_ms"][explore], pins, unit="ms")
    top = pins[np.argsort(-scores, axis=1)[:, :10]]
    carries = _carries(out)
    assert carries[top, truth["interest"][explore, None]].all()
    assert carries[top, truth["chain_interest"][explore, None]].mean() < 0.3


def test_the_oracle_finds_the_targets_pin_far_more_often(world: tuple[Path, Oracle], truth) -> None:
    _, oracle = world
    rows = np.arange(0, len(truth["user_id"]), 5)
    pins = np.arange(1, CFG.pins + 1)
    day = oracle.truth.day[oracle.find(truth["user_id"][rows], truth["ts_ms"][rows], "ms")]

    def hit_rate(interest: np.ndarray) -> float:
        scores = pin_scores(oracle.pools, oracle.prior, oracle.noise_rate, day, interest, pins)
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        return float((top == (truth["pin_id"][rows, None] - 1)).any(axis=1).mean())

    planted = hit_rate(truth["interest"][rows])
    shuffled = hit_rate(np.random.default_rng(1).permutation(truth["interest"][rows]))
    assert planted > 0.25 and planted > 3 * shuffled


def test_shown_mode_knows_the_noise_too(world: tuple[Path, Oracle], truth) -> None:
    out, oracle = world
    noisy = np.flatnonzero(truth["noise"] & (truth["shown_interest"] != truth["interest"]))
    assert len(noisy) > 20
    pins = np.arange(1, CFG.pins + 1)
    args = (truth["user_id"][noisy], truth["ts_ms"][noisy] // 1000, pins)
    shown = oracle.scores(*args, mode="shown")
    top = pins[np.argsort(-shown, axis=1)[:, :5]]
    assert _carries(out)[top, truth["shown_interest"][noisy, None]].all()
    intent = oracle.scores(*args)
    target = truth["pin_id"][noisy] - 1
    rows = np.arange(len(noisy))
    assert (shown[rows, target] > intent[rows, target]).mean() > 0.9


def test_find_resolves_seconds_and_refuses_strangers(world: tuple[Path, Oracle], truth) -> None:
    _, oracle = world
    rows = oracle.find(truth["user_id"], truth["ts_ms"], unit="ms")
    assert np.array_equal(oracle.truth.interest[rows], truth["interest"])
    by_s = oracle.find(truth["user_id"], truth["ts_ms"] // 1000)
    assert np.array_equal(by_s, rows)  # no two conversions of a user share a second here
    with pytest.raises(InputError, match="user_id 1 at 0 s"):
        oracle.find(np.array([1]), np.array([0]))
    with pytest.raises(ValueError, match="unit"):
        oracle.find(truth["user_id"], truth["ts_ms"], unit="h")


def test_a_shared_second_resolves_to_the_latest(world: tuple[Path, Oracle]) -> None:
    _, oracle = world
    t = oracle.truth
    twin = dataclasses.replace(
        t,
        user_id=np.array([5, 5, 6]),
        ts_ms=np.array([1_000_100, 1_000_900, 1_000_500]),
        interest=np.array([0, 1, 2]),
    )
    probe = dataclasses.replace(oracle, truth=twin)
    assert probe.find(np.array([5, 6]), np.array([1000, 1000])).tolist() == [1, 2]


def test_an_old_world_without_conversion_truth_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "w"
    generate(dataclasses.replace(CFG, users=5, days=1), out, progress=False)
    doc_path = out / "world.json"
    doc = doc_path.read_text().replace('"conversions": "truth/conversions.parquet"', '"x": "y"')
    doc_path.write_text(doc)
    with pytest.raises(InputError, match="no conversion truth"):
        load_oracle(out)
