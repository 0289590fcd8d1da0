"""Fixtures of the encode tests: a tiny world, a registry with two small untrained encoders,
a private lake copy and Feast store per test. Named ``encode_*`` so they never shadow or
serve the fixtures of the other batch jobs' tests in this directory."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path

import feast
import pytest

from model.artifacts import TwoTower, save_model
from model.config import ModelConfig
from model.lake_io import read_pins
from towerline.core.featurestore import apply_repo, open_store
from towerline.world import WorldConfig, generate

END = dt.date(2025, 6, 30)
# Small enough to encode in well under a second; max_len below the typical history so the
# "last L events" cut is exercised.
TINY_MODEL = {
    "d_model": 16,
    "heads": 2,
    "layers": 1,
    "ff": 32,
    "max_len": 12,
    "dim": 16,
    "context_dim": 8,
    "head_hidden": 32,
}


@pytest.fixture(scope="session")
def encode_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: 120 users, ~20 offsite events each over 4 days ending at END."""
    out = tmp_path_factory.mktemp("encode-world") / "lake"
    cfg = WorldConfig(users=120, pins=300, days=4, seed=5, end_date=END, offsite_per_user=20.0)
    generate(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def encode_registry(tmp_path_factory: pytest.TempPathFactory, encode_world: Path) -> Path:
    """Versions v1 and v2 of the same tiny architecture, different initialisations."""
    root = tmp_path_factory.mktemp("encode-registry")
    pins = read_pins(encode_world)
    cfg = ModelConfig.for_data(len(pins), pins.max_interest_id, **TINY_MODEL)
    for seed in (1, 2):
        save_model(root, TwoTower.build(cfg, seed=seed).eval(), {"seed": seed}, {})
    return root


@pytest.fixture
def encode_lake(tmp_path: Path, encode_world: Path) -> Path:
    """A private copy of the world: runs publish into it."""
    return Path(shutil.copytree(encode_world, tmp_path / "lake"))


@pytest.fixture
def encode_feast_dir(tmp_path: Path) -> Path:
    return tmp_path / "feast"


@pytest.fixture
def encode_store(encode_feast_dir: Path, encode_lake: Path) -> feast.FeatureStore:
    """A real Feast store on SQLite with its own project and data directory."""
    store = open_store(
        online="sqlite", project=f"enc_{uuid.uuid4().hex[:8]}", data_dir=encode_feast_dir
    )
    apply_repo(store, lake=encode_lake)
    return store
