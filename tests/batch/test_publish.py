"""The publish rule with a real registry, real index files and real Feast (SQLite)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import feast
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.encode_output import STATE_MANIFEST
from batch.publish import PublishError, publish, rollback
from model.artifacts import TwoTower, save_model
from model.config import ModelConfig
from model.registry import list_versions, pinned_versions
from schemas.arrow import USER_HISTORY_STATE
from tests.cli.cli_kit import assert_user_error, towerline_here
from towerline.core.ann import SERVING, HnswIndex, new_staging, publish_index, read_pointer
from towerline.core.featurestore import apply_repo, open_store, write_online

DAY = dt.date(2025, 6, 30)
NOW = dt.datetime(2025, 7, 1, 2, tzinfo=dt.UTC)
USERS = list(range(1, 41))
CFG = ModelConfig(pin_buckets=256, interest_vocab=16, dim=8, d_model=8, ff=16, head_hidden=16)


def write_states(lake: Path, version: str, store: feast.FeatureStore | None = None) -> None:
    """History states of ``version`` for USERS, in the encode job's offline layout
    (``dt=DATE/<version>/part-*.parquet``) and, with ``store``, online."""
    table = pa.table(
        {
            "user_id": USERS,
            "model_version": [version] * len(USERS),
            "hidden": [[0.1 * u, -0.1] for u in USERS],
            "history_len": pa.array([3] * len(USERS), pa.int32()),
            "last_event_ts_ms": [1_000] * len(USERS),
            "event_timestamp": [NOW] * len(USERS),
        }
    ).cast(USER_HISTORY_STATE)
    part = lake / "user_history_state" / f"dt={DAY.isoformat()}" / version
    part.mkdir(parents=True)
    pq.write_table(table, part / "part-00000.parquet")
    if store is not None:
        write_online(store, "user_history_state", table)


def item_tower_sha(registry: Path, version: str, model: str = "two_tower") -> str:
    manifest = json.loads((registry / model / version / "manifest.json").read_text())
    return manifest["files"]["item_tower.pt"]


def build_index(
    indexes: Path,
    registry: Path,
    version: str,
    tower_sha: str | None = None,
    model: str = "two_tower",
) -> Path:
    meta = {
        "model_name": model,
        "model_version": version,
        "built_at": NOW.isoformat(),
        "corpus_snapshot": "corpus-20250630-abc",
        "sha256": {"item_tower": tower_sha or item_tower_sha(registry, version, model)},
    }
    staging = new_staging(indexes, model)
    vectors = np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32)
    HnswIndex.build(np.arange(30), vectors, metadata=meta).save(staging)
    return publish_index(staging, indexes, model, 3, NOW)


def write_manifest(lake: Path, version: str, **fields: object) -> None:
    """The ``_manifest.json`` the encode job writes beside a day's states."""
    doc = {"model_name": "two_tower", "model_version": version, "dt": DAY.isoformat(), **fields}
    part = lake / "user_history_state" / f"dt={DAY.isoformat()}" / version
    (part / STATE_MANIFEST).write_text(json.dumps(doc))


def small_registry(root: Path, versions: int, model: str = "two_tower") -> Path:
    for seed in range(versions):
        save_model(root, TwoTower.build(CFG, seed=seed), {"start": "x"}, {}, model_name=model)
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Registry with v1..v3; lake and Feast (SQLite) holding history states of v1 only."""
    root = tmp_path_factory.mktemp("publish")
    registry, lake = root / "registry", root / "lake"
    small_registry(registry, 3)
    lake.mkdir()
    store = open_store(
        online="sqlite", project=f"tl_pub_{uuid.uuid4().hex[:10]}", data_dir=root / "feast"
    )
    apply_repo(store, lake)
    write_states(lake, "v1", store)
    return {"registry": registry, "lake": lake, "store": store, "root": root}


def test_publish_points_serving_at_a_complete_version(env: dict, tmp_path: Path) -> None:
    index_dir = build_index(tmp_path, env["registry"], "v1")
    doc = publish("v1", env["registry"], tmp_path, env["lake"], env["store"], now=NOW)
    assert read_pointer(tmp_path / "two_tower" / SERVING) == doc
    assert doc["model_version"] == "v1" and doc["dir"] == index_dir.name
    assert doc["history_states"] == {"partition": "2025-06-30", "rows": 40, "online_sampled": 16}
    assert doc["previous"] is None
    again = publish("v1", env["registry"], tmp_path, env["lake"], env["store"], now=NOW)
    assert again["previous"] is None  # republishing the live build never points at itself


def test_publish_refuses_a_version_without_history_states(env: dict, tmp_path: Path) -> None:
    build_index(tmp_path, env["registry"], "v1")
    build_index(tmp_path, env["registry"], "v2")
    publish("v1", env["registry"], tmp_path, env["lake"], env["store"])
    serving = (tmp_path / "two_tower" / SERVING).read_bytes()
    with pytest.raises(PublishError, match="no user_history_state rows for model_version 'v2'"):
        publish("v2", env["registry"], tmp_path, env["lake"], env["store"])
    assert (tmp_path / "two_tower" / SERVING).read_bytes() == serving  # left as it was


def test_publish_refuses_a_version_without_an_index(env: dict, tmp_path: Path) -> None:
    build_index(tmp_path, env["registry"], "v2")
    with pytest.raises(PublishError, match="two_tower v1 has no index"):
        publish("v1", env["registry"], tmp_path, env["lake"], env["store"])
    assert not (tmp_path / "two_tower" / SERVING).exists()


def test_publish_refuses_states_missing_online(env: dict, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_states(lake, "v3")  # offline only
    build_index(tmp_path / "indexes", env["registry"], "v3")
    with pytest.raises(PublishError, match="online store has no user_history_state of v3"):
        publish("v3", env["registry"], tmp_path / "indexes", lake, env["store"])
    doc = publish("v3", env["registry"], tmp_path / "indexes", lake, store=None)  # offline only
    assert "online_sampled" not in doc["history_states"]


def test_publish_refuses_an_index_of_another_item_tower(env: dict, tmp_path: Path) -> None:
    build_index(tmp_path, env["registry"], "v1", tower_sha=item_tower_sha(env["registry"], "v2"))
    with pytest.raises(PublishError, match="built from another item tower"):
        publish("v1", env["registry"], tmp_path, env["lake"], env["store"])


def test_cli_publish_refusal(env: dict, tmp_path: Path) -> None:
    build_index(tmp_path, env["registry"], "v2")
    args = ["publish", "--version", "v2", "--registry", str(env["registry"])]
    args += ["--indexes", str(tmp_path), "--lake", str(env["lake"]), "--no-online-check"]
    assert_user_error(towerline_here(*args), 1, "no user_history_state rows for model_version 'v2'")


def test_publish_pins_what_serving_names_so_training_never_prunes_it(tmp_path: Path) -> None:
    registry, lake, indexes = small_registry(tmp_path / "reg", 3), tmp_path / "lake", tmp_path
    for version in ("v1", "v2"):
        write_states(lake, version)
        build_index(indexes, registry, version)
    publish("v1", registry, indexes, lake, now=NOW)
    assert pinned_versions(registry, "two_tower") == {"serving": "v1"}
    publish("v2", registry, indexes, lake, now=NOW)
    assert pinned_versions(registry, "two_tower") == {"serving": "v2", "previous": "v1"}
    save_model(registry, TwoTower.build(CFG, seed=9), {"start": "x"}, {}, keep=1)
    assert list_versions(registry, "two_tower") == ["v1", "v2", "v4"]  # v3 was pruned


def test_publish_refuses_the_states_of_another_model(tmp_path: Path) -> None:
    registry = small_registry(tmp_path / "reg", 1)
    small_registry(registry, 1, model="other")
    lake, indexes = tmp_path / "lake", tmp_path / "indexes"
    write_states(lake, "v1")
    build_index(indexes, registry, "v1", model="other")
    # A partition from before manifests: taken for the default model only.
    with pytest.raises(PublishError, match="does not record which model wrote it"):
        publish("v1", registry, indexes, lake, model_name="other")
    write_manifest(lake, "v1")
    with pytest.raises(PublishError, match="written by model 'two_tower', not 'other'"):
        publish("v1", registry, indexes, lake, model_name="other")
    write_manifest(lake, "v1", model_name="other", encoder_sha256="0" * 64)
    with pytest.raises(PublishError, match="encoded by another encoder than other v1"):
        publish("v1", registry, indexes, lake, model_name="other")
    assert not (indexes / "other" / SERVING).exists()
    write_manifest(lake, "v1", model_name="other")
    assert publish("v1", registry, indexes, lake, model_name="other")["model_name"] == "other"


def test_rollback_serves_the_previous_build_again_and_a_second_undoes_it(tmp_path: Path) -> None:
    registry, lake, indexes = small_registry(tmp_path / "registry", 2), tmp_path / "lake", tmp_path / "indexes"  # fmt: skip
    for version in ("v1", "v2"):
        write_states(lake, version)
    first, second = build_index(indexes, registry, "v1"), build_index(indexes, registry, "v2")
    with pytest.raises(PublishError, match="nothing to roll back to"):
        rollback(registry, indexes, lake)
    publish("v1", registry, indexes, lake)
    publish("v2", registry, indexes, lake)
    back = rollback(registry, indexes, lake)
    assert (back["model_version"], back["dir"]) == ("v1", first.name)
    assert back["previous"]["model_version"] == "v2"
    assert json.loads((registry / "two_tower" / "pinned.json").read_text())["pinned"] == {"serving": "v1", "previous": "v2"}  # fmt: skip
    ran = towerline_here("rollback", "--registry", registry, "--indexes", indexes, "--lake", lake, "--no-online-check")  # fmt: skip
    assert ran.code == 0, str(ran)
    assert read_pointer(indexes / "two_tower" / SERVING)["dir"] == second.name


def test_rollback_refuses_a_previous_build_that_no_longer_verifies(tmp_path: Path) -> None:
    registry, lake, indexes = small_registry(tmp_path / "registry", 2), tmp_path / "lake", tmp_path / "indexes"  # fmt: skip
    for version in ("v1", "v2"):
        write_states(lake, version)
    first = build_index(indexes, registry, "v1")
    build_index(indexes, registry, "v2")
    publish("v1", registry, indexes, lake)
    publish("v2", registry, indexes, lake)
    (first / "index.bin").write_bytes(b"corrupt")
    before = (indexes / "two_tower" / SERVING).read_text()
    ran = towerline_here("rollback", "--registry", registry, "--indexes", indexes, "--lake", lake, "--no-online-check")  # fmt: skip
    assert_user_error(ran, 1, "no intact index")
    assert (indexes / "two_tower" / SERVING).read_text() == before
