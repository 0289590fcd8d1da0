"""The Feast repository and towerline.core.featurestore against real SQLite and real Redis.

Every test works in tmp_path with its own project name; the Redis tests delete their
keys afterwards and fail (not skip) when Redis on 127.0.0.1:6379 is not there.
"""

import datetime as dt
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import feast
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from batch.profiles import load_profiles
from schemas.arrow import PIN_PROFILE, USER_PROFILE
from towerline.core.featurestore import (
    REPO_DIR,
    FeatureStoreError,
    apply_repo,
    open_store,
    read_online,
    redis_connection_string,
    write_online,
)

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
USERS = [
    {"user_id": 1, "age_bucket": "AGE_18_24", "gender": "FEMALE", "country": "FR", "segment": "a"},
    {"user_id": 2, "age_bucket": "AGE_35_44", "gender": "MALE", "country": "US", "segment": "b"},
    {
        "user_id": 3,
        "age_bucket": "AGE_UNKNOWN",
        "gender": "UNKNOWN",
        "country": "DE",
        "segment": "c",
    },
]
PINS = [
    {"pin_id": 10, "interest_ids": [4, 9], "interest_confidences": [0.75, 0.25]},
    {"pin_id": 11, "interest_ids": [7], "interest_confidences": [1.0]},
]
PROFILE_REFS = [
    "user_profile:age_bucket",
    "user_profile:country",
    "pin_profile:interest_ids",
    "pin_profile:interest_confidences",
    "pin_profile:image_signature",
]
VIEWS = {"user_history_state", "user_profile", "user_realtime_seq", "pin_profile", "pin_engagement"}


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    users = [{**u, "updated_ts": NOW} for u in USERS]
    pins = [{**p, "image_signature": f"sig{p['pin_id']}", "updated_ts": NOW} for p in PINS]
    for table, rows, schema in (("users", users, USER_PROFILE), ("pins", pins, PIN_PROFILE)):
        (root / table).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema), root / table / "part-0.parquet")
    return root


@pytest.fixture
def project() -> str:
    return f"tl_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_client(project: str):
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis on {REDIS_HOST}:{REDIS_PORT} is required for this test: {exc}")
    yield client
    # Feast ends every key with the project name: whatever a failed test left behind goes.
    leftovers = list(client.scan_iter(match=f"*{project}", count=1000))
    if leftovers:
        client.delete(*leftovers)
    client.close()


def _sqlite_store(tmp_path: Path, project: str) -> feast.FeatureStore:
    return open_store(data_dir=tmp_path / "feast", online="sqlite", project=project)


def _assert_profiles_read_back(store: feast.FeatureStore) -> None:
    rows = [
        {"user_id": 1, "pin_id": 10},
        {"user_id": 3, "pin_id": 11},
        {"user_id": 99, "pin_id": 99},
    ]
    got = read_online(store, PROFILE_REFS, rows)
    assert got["age_bucket"] == ["AGE_18_24", "AGE_UNKNOWN", None]
    assert got["country"] == ["FR", "DE", None]
    assert got["interest_ids"] == [[4, 9], [7], None]
    assert got["interest_confidences"] == [[0.75, 0.25], [1.0], None]
    assert got["image_signature"] == ["sig10", "sig11", None]


def test_sqlite_apply_load_and_read_back(tmp_path: Path, lake: Path, project: str) -> None:
    store = _sqlite_store(tmp_path, project)
    assert set(apply_repo(store, lake=lake)) == VIEWS
    assert load_profiles(store, lake, progress=False) == {"user_profile": 3, "pin_profile": 2}
    _assert_profiles_read_back(store)
    # Everything lives in the temp dir, nothing in the checkout's feature_repo/data.
    assert Path(store.config.online_store.path) == tmp_path / "feast" / "online.db"
    assert store.get_feature_view("pin_profile").batch_source.path == str(lake / "pins")


@pytest.mark.redis
def test_redis_apply_load_read_back_and_isolation(
    tmp_path: Path, lake: Path, project: str, redis_client: redis.Redis
) -> None:
    store = open_store(
        data_dir=tmp_path / "a",
        online="redis",
        redis_url=f"{REDIS_HOST}:{REDIS_PORT}",
        project=project,
    )
    apply_repo(store)
    assert load_profiles(store, lake, progress=False) == {"user_profile": 3, "pin_profile": 2}
    _assert_profiles_read_back(store)
    assert any(redis_client.scan_iter(match=f"*{project}", count=1000))

    other = open_store(data_dir=tmp_path / "b", online="redis", project=f"{project}_other")
    apply_repo(other)
    assert read_online(other, ["user_profile:country"], [{"user_id": 1}])["country"] == [None]

    store.teardown()
    assert not any(redis_client.scan_iter(match=f"*{project}", count=1000))


def test_stream_and_batch_views_take_batched_writes(tmp_path: Path, project: str) -> None:
    store = _sqlite_store(tmp_path, project)
    apply_repo(store)
    seq = pa.table(
        {
            "user_id": pa.array([1, 2, 3, 4, 5], pa.int64()),
            "pin_ids": [[10, 11], [12], [13], [14], [15]],
            "event_ts_ms": [[1, 2], [3], [4], [5], [6]],
            "actions": [["CLICK", "SAVE"], ["CLOSEUP"], ["SHARE"], ["SAVE"], ["CLICK"]],
            "updated_ts_ms": pa.array([7] * 5, pa.int64()),
            "event_timestamp": pa.array([NOW] * 5, pa.timestamp("ms", tz="UTC")),
        }
    )
    sizes: list[int] = []
    assert write_online(store, "user_realtime_seq", seq, batch_size=2, on_batch=sizes.append) == 5
    assert sizes == [2, 2, 1]
    engagement = {
        "pin_id": [10],
        "decayed_closeup": [1.5],
        "decayed_click": [0.5],
        "decayed_save": [2.0],
        "decayed_share": [0.0],
        "last_event_ts_ms": [123],
        "event_timestamp": [NOW],
    }
    assert write_online(store, "pin_engagement", pa.table(engagement).to_pandas()) == 1
    state = {
        "user_id": [1, 1],
        "model_version": ["v1", "v2"],
        "hidden": [[0.5, -0.5], [1.0, 0.0]],
        "history_len": pa.array([3, 4], pa.int32()),
        "last_event_ts_ms": [5_000, 7_000],
        "event_timestamp": [NOW, NOW],
    }
    assert write_online(store, "user_history_state", pa.table(state)) == 2

    got = read_online(
        store,
        ["user_realtime_seq:pin_ids", "user_realtime_seq:actions", "pin_engagement:decayed_save"],
        [{"user_id": 1, "pin_id": 10}],
    )
    assert (got["pin_ids"], got["actions"], got["decayed_save"]) == (
        [[10, 11]],
        [["CLICK", "SAVE"]],
        [2.0],
    )
    refs = [f"user_history_state:{f}" for f in ("hidden", "history_len", "last_event_ts_ms")]
    got = read_online(store, refs, [{"user_id": 1, "model_version": "v2"}])
    want = {"hidden": [[1.0, 0.0]], "history_len": [4], "last_event_ts_ms": [7_000]}
    assert {k: got[k] for k in want} == want


def test_every_view_is_documented_and_tagged(tmp_path: Path, project: str) -> None:
    store = _sqlite_store(tmp_path, project)
    apply_repo(store)
    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == VIEWS
    for view in views.values():
        assert view.ttl and view.ttl.total_seconds() > 0, view.name
        assert int(view.tags["freshness_target_s"]) > 0, view.name
        assert all(f.description for f in view.features), view.name
    assert views["user_history_state"].tags["freshness_target_s"] == str(26 * 3600)
    assert views["pin_engagement"].tags["freshness_target_s"] == "1"
    assert {e.name for e in store.list_entities()} >= {"user", "pin", "model_version"}
    push = {s.name for s in store.list_data_sources() if isinstance(s, feast.PushSource)}
    assert push == {"user_realtime_seq_push_source", "pin_engagement_push_source"}


def test_clear_errors(tmp_path: Path, lake: Path, project: str) -> None:
    with pytest.raises(FeatureStoreError, match="unknown online store 'cassandra'"):
        open_store(data_dir=tmp_path / "feast", online="cassandra", project=project)
    store = _sqlite_store(tmp_path, project)
    apply_repo(store)
    shutil.rmtree(lake / "pins")
    with pytest.raises(FeatureStoreError, match="pin_profile"):
        load_profiles(store, lake, progress=False)
    with pytest.raises(FeatureStoreError, match="no feature view 'nope'"):
        write_online(store, "nope", pa.table({"user_id": [1]}))


def test_redis_urls_become_feast_connection_strings() -> None:
    assert redis_connection_string("127.0.0.1:6379") == "127.0.0.1:6379"
    assert redis_connection_string("redis://:pw@redis.local:6380/2") == (
        "redis.local:6380,db=2,password=pw"
    )
    with pytest.raises(FeatureStoreError):
        redis_connection_string("http://x")


def test_feast_cli_apply_in_a_fresh_copy(tmp_path: Path, lake: Path) -> None:
    repo = tmp_path / "checkout" / "feature_repo"
    shutil.copytree(REPO_DIR, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    feast_bin = Path(sys.executable).parent / "feast"
    done = subprocess.run(
        [str(feast_bin), "-c", "feature_repo", "apply"],
        cwd=repo.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (repo / "data" / "registry.db").is_file() and (repo / "data" / "online.db").is_file()
    store = open_store(repo, online="sqlite", project="towerline")
    assert {v.name for v in store.list_feature_views()} == VIEWS
    # The plain `feast` CLI sees the declarations' default lake, <repo>/data/lake.
    assert store.get_feature_view("user_profile").batch_source.path == "../data/lake/users"
    redis_yaml = feast.repo_config.load_repo_config(repo, repo / "feature_store.redis.yaml")
    assert redis_yaml.online_store.type == "redis"
