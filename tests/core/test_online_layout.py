"""Feast's online layout and whole-store sampling against real SQLite and real Redis.

Rows are written by Feast itself (``write_to_online_store``); the layout's keys and fields
must be Feast's byte for byte, and a sample must return exactly what Feast wrote.
"""

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import feast
import pyarrow as pa
import pytest
import redis
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from towerline.core.errors import UnavailableError
from towerline.core.featurestore import apply_repo, open_store, write_online
from towerline.core.online_layout import EntityKeys, parse_entity_key, redis_key, view_layout
from towerline.core.online_sample import read_event_times, sample_rows

REDIS_URL = "127.0.0.1:6379"
T0 = 1_760_000_000_000  # ms
USERS, PINS, STATE_USERS = 30, 10, 20
LONG = "m" * 91  # its length byte is "[": a glob pattern must quote it


def seq_time(u: int) -> int:
    return T0 + u * 1_001  # distinct seconds and milliseconds per user


def stored(store: feast.FeatureStore, ms: int) -> int:
    """The event time as the store keeps it: SQLite (Feast's adapter) in whole seconds."""
    return ms if store.config.online_store.type == "redis" else ms // 1000 * 1000


def state_time(version: str) -> int:
    return T0 - 86_400_000 if version == "v1" else T0 - 3_600_000


@pytest.fixture
def project() -> str:
    return f"tl_layout_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_cleanup(project: str) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis on {REDIS_URL} is required for this test: {exc}")
    yield client
    keys = list(client.scan_iter(match=f"*{project}", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path, project: str) -> feast.FeatureStore:
    """An applied store of this test's project holding the rows of ``write_rows``."""
    if request.param == "redis":
        request.getfixturevalue("redis_cleanup")
    made = make_store(request.param, tmp_path / "feast", project)
    write_rows(made)
    return made


def make_store(kind: str, data_dir: Path, project: str) -> feast.FeatureStore:
    made = open_store(online=kind, redis_url=REDIS_URL, project=project, data_dir=data_dir)
    apply_repo(made)
    return made


def ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def write_rows(store: feast.FeatureStore, users: int = USERS) -> None:
    seq = {
        "user_id": pa.array(range(users), pa.int64()),
        "pin_ids": [[u, u + 1] for u in range(users)],
        "event_ts_ms": [[seq_time(u) - 5, seq_time(u)] for u in range(users)],
        "actions": [["CLICK", "SAVE"]] * users,
        "updated_ts_ms": pa.array([seq_time(u) + 40 for u in range(users)], pa.int64()),
        "event_timestamp": [ts(seq_time(u)) for u in range(users)],
    }
    write_online(store, "user_realtime_seq", pa.table(seq))
    profile = {  # users 0..4 only: their keys hold rows of two views
        "user_id": pa.array(range(5), pa.int64()),
        "age_bucket": ["AGE_18_24"] * 5,
        "gender": ["FEMALE"] * 5,
        "country": ["FR"] * 5,
        "segment": ["a"] * 5,
        "updated_ts": [ts(T0)] * 5,
    }
    write_online(store, "user_profile", pa.table(profile))
    for version in ("v1", "v2", LONG):
        n = STATE_USERS if version != LONG else 3
        state = {
            "user_id": pa.array(range(n), pa.int64()),
            "model_version": [version] * n,
            "hidden": [[float(u), 0.5] for u in range(n)],
            "history_len": pa.array([u + (version == "v2") for u in range(n)], pa.int32()),
            "last_event_ts_ms": [1_000 * u for u in range(n)],
            "event_timestamp": [ts(state_time(version))] * n,
        }
        write_online(store, "user_history_state", pa.table(state))


def test_keys_and_fields_are_feasts_own(tmp_path: Path, project: str) -> None:
    store = make_store("sqlite", tmp_path, project)
    layout = view_layout(store, "user_history_state")
    assert layout.join_keys == ("model_version", "user_id")  # Feast serializes them sorted
    proto = EntityKey(
        join_keys=["user_id", "model_version"],
        entity_values=[Value(int64_val=2**40 + 3), Value(string_val="v7")],
    )
    raw = layout.entity_key({"user_id": 2**40 + 3, "model_version": "v7"})
    assert raw == serialize_entity_key(proto, 3)
    assert redis_key(raw, project) == _redis_key(project, proto, 3)
    assert parse_entity_key(redis_key(raw, project)) == (
        {"model_version": "v7", "user_id": 2**40 + 3},
        len(raw),
    )
    assert raw.startswith(layout.key_prefix({"model_version": "v7"}))
    assert not raw.startswith(layout.key_prefix({"model_version": "v8"}))
    assert layout.redis_ts_field == b"_ts:user_history_state"
    assert layout.redis_field("hidden") == _mmh3("user_history_state:hidden")
    assert layout.sqlite_table == f"{project}_user_history_state"
    keys = EntityKeys("user_id", 3)
    assert keys(-5) == serialize_entity_key(keys.proto(-5), 3)
    with pytest.raises(ValueError):
        parse_entity_key(raw[:-3])


def test_a_whole_view_sample_is_what_feast_wrote(store: feast.FeatureStore) -> None:
    got = sample_rows(store, "user_realtime_seq", 1000, fields=("pin_ids", "updated_ts_ms"))
    assert got.exhaustive and got.total == USERS and len(got.rows) == USERS
    by_user = {r.key["user_id"]: r for r in got.rows}
    assert sorted(by_user) == list(range(USERS))
    for u, row in by_user.items():
        assert row.event_ts_ms == stored(store, seq_time(u))
        assert row.values == {"pin_ids": [u, u + 1], "updated_ts_ms": seq_time(u) + 40}
    profiles = sample_rows(store, "user_profile", 1000, fields=("country",))
    assert sorted(r.key["user_id"] for r in profiles.rows) == list(range(5))
    assert {r.values["country"] for r in profiles.rows} == {"FR"}
    assert got.scanned >= USERS


def test_a_sample_stops_at_its_limit_and_says_so(store: feast.FeatureStore) -> None:
    got = sample_rows(store, "user_realtime_seq", 7, scan_count=5)
    assert len(got.rows) == 7 and not got.exhaustive and got.scanned >= 7
    assert all(r.event_ts_ms == stored(store, seq_time(r.key["user_id"])) for r in got.rows)
    assert len({r.key["user_id"] for r in got.rows}) == 7
    kind = store.config.online_store.type
    assert got.total == (USERS if kind == "sqlite" else None)  # exact only where cheap
    assert sample_rows(store, "user_realtime_seq", 0).rows == []


def test_a_sample_of_one_model_version(store: feast.FeatureStore) -> None:
    got = sample_rows(store, "user_history_state", 100, fields=("hidden", "history_len"), entity_filter={"model_version": "v2"})  # fmt: skip
    assert got.exhaustive and got.total == STATE_USERS
    assert sorted(r.key["user_id"] for r in got.rows) == list(range(STATE_USERS))
    for row in got.rows:
        u = row.key["user_id"]
        assert row.key["model_version"] == "v2" and row.event_ts_ms == state_time("v2")
        assert row.values == {"hidden": pytest.approx([float(u), 0.5]), "history_len": u + 1}
    odd = sample_rows(store, "user_history_state", 100, entity_filter={"model_version": LONG})
    assert sorted(r.key["user_id"] for r in odd.rows) == [0, 1, 2] and odd.total == 3
    one_user = sample_rows(store, "user_history_state", 100, entity_filter={"user_id": 4})
    assert sorted(r.key["model_version"] for r in one_user.rows) == ["v1", "v2"]


def test_event_times_of_given_entities(store: feast.FeatureStore) -> None:
    keys = [{"user_id": 3, "model_version": "v1"}, {"user_id": 3, "model_version": "v9"},
            {"user_id": STATE_USERS + 1, "model_version": "v2"}, {"user_id": 0, "model_version": "v2"}]  # fmt: skip
    got = read_event_times(store, "user_history_state", keys)
    assert got == [state_time("v1"), None, None, state_time("v2")]
    seq = read_event_times(store, "user_realtime_seq", [{"user_id": 9}])
    assert seq == [stored(store, seq_time(9))]


def test_another_project_whose_name_ends_like_ours_is_not_sampled(
    tmp_path: Path, project: str, redis_cleanup: redis.Redis
) -> None:
    ours = make_store("redis", tmp_path / "ours", project)
    theirs = make_store("redis", tmp_path / "theirs", f"x{project}")
    write_rows(ours, users=4)
    try:
        write_rows(theirs, users=6)
        got = sample_rows(ours, "user_realtime_seq", 100)
        assert sorted(r.key["user_id"] for r in got.rows) == [0, 1, 2, 3] and got.total == 4
    finally:
        keys = list(redis_cleanup.scan_iter(match=f"*x{project}", count=1000))
        redis_cleanup.delete(*keys)


def test_an_empty_store_and_a_dead_redis(tmp_path: Path, project: str, free_port: Callable) -> None:
    empty = open_store(online="sqlite", project=project, data_dir=tmp_path / "empty")
    apply_repo(empty)
    got = sample_rows(empty, "user_realtime_seq", 10)
    assert (got.rows, got.total, got.exhaustive) == ([], 0, True)
    # the same registry, its online store on a port where nothing listens
    dead = open_store(online="redis", redis_url=f"127.0.0.1:{free_port()}", project=project, data_dir=tmp_path / "empty")  # fmt: skip
    with pytest.raises(UnavailableError, match="cannot read the online store"):
        sample_rows(dead, "user_realtime_seq", 10)


@pytest.fixture
def free_port() -> Callable[[], int]:
    import socket

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick
