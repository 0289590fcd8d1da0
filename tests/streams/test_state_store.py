"""The state stores against real SQLite and Redis: Feast's layout, atomicity, the CAS."""

import datetime as dt
import re
import sqlite3

import feast
import pytest
from stream_kit import NAMESPACE

from streams import decay
from streams.feast_layout import layout_of, pin_values, user_values
from streams.sequence import Entry
from streams.state import NO_OFFSET, Conflict
from streams.store_redis import RedisStateStore, StateLayoutError
from streams.stores import open_state_store
from streams.update import BatchUpdate, OffsetMove
from towerline.core.online_layout import sqlite_path
from towerline.core.stream_progress import PartitionProgress, read_progress

H = 3_600_000.0
T = 1_760_000_000_123
SEQ = (Entry(T - 5000, "a", 11, 0), Entry(T, "b", 12, 3))
PIN = decay.Decayed((1.0, 0.5, 0.0, 2.25), T)


def update(expected: int, applied: int, **kw) -> BatchUpdate:
    base = dict(users={1: SEQ}, pins={1: PIN}, offsets={0: OffsetMove(expected, applied)}, write_ms=T + 7)  # fmt: skip
    return BatchUpdate(**{**base, **kw})


def feast_writes(store: feast.FeatureStore, entity: int) -> None:
    """The same rows, for another entity id, through Feast's own online_write_batch."""
    layout = layout_of(store)
    provider = store._get_provider()
    for view, values, event_ms in (
        (layout.user, user_values(SEQ, T + 7), SEQ[-1].ts_ms),
        (layout.pin, pin_values(PIN), PIN.ref_ms),
    ):
        ts = dt.datetime.fromtimestamp(event_ms / 1000, dt.UTC)
        row = (view.keys.proto(entity), values, ts, None)
        provider.online_write_batch(store.config, store.get_feature_view(view.name), [row], None)


def test_rows_are_feasts_own_and_read_back(online: str, feast_store) -> None:
    store = feast_store(online)
    state = open_state_store(store, NAMESPACE, H)
    assert state.commit("t", update(NO_OFFSET, 41)) is None
    feast_writes(store, 2)
    got = store.get_online_features(
        ["user_realtime_seq:pin_ids", "user_realtime_seq:actions", "user_realtime_seq:event_ts_ms",
         "user_realtime_seq:updated_ts_ms", "pin_engagement:decayed_share",
         "pin_engagement:last_event_ts_ms"],
        [{"user_id": 1, "pin_id": 1}, {"user_id": 2, "pin_id": 2}],
    ).to_dict()  # fmt: skip
    assert got["pin_ids"] == [[11, 12]] * 2 and got["actions"] == [["CLOSEUP", "SHARE"]] * 2
    assert got["event_ts_ms"] == [[T - 5000, T]] * 2 and got["updated_ts_ms"] == [T + 7] * 2
    assert got["decayed_share"] == [2.25] * 2 and got["last_event_ts_ms"] == [T] * 2
    ours, feasts = stored_rows(store, state, 1), stored_rows(store, state, 2)
    assert all(ours) and ours == feasts  # byte for byte
    if isinstance(state, RedisStateStore):  # the state rides in the row's hash, one field
        layout, names = layout_of(store), state.names
        user_hash = state.client.hgetall(layout.user.keys(1) + store.project.encode())
        pin_hash = state.client.hgetall(layout.pin.keys(1) + store.project.encode())
        assert set(user_hash) - set(ours[0]) == {names.redis_user_field.encode()}
        assert set(pin_hash) - set(ours[1]) == {names.redis_pin_field.encode()}
        own_keys = set(state.client.scan_iter(match=f"{names.namespace}:*"))
        assert own_keys == {k.encode() for k in (names.redis_offsets, names.redis_progress, names.redis_layout)}  # fmt: skip
    state.close()


def stored_rows(store: feast.FeatureStore, state, entity: int) -> list:
    layout = layout_of(store)
    out = []
    for view in (layout.user, layout.pin):
        key = view.keys(entity)
        if isinstance(state, RedisStateStore):
            fields = state.client.hgetall(key + store.project.encode())
            out.append({f: v for f, v in fields.items() if f in {view.redis_ts_field, *view.redis_fields}})  # fmt: skip
        else:
            with sqlite3.connect(state.conn.execute("PRAGMA database_list").fetchone()[2]) as c:
                sql = f'SELECT feature_name, value, value_text, event_ts FROM "{view.sqlite_table}" WHERE entity_key = ? ORDER BY feature_name'  # fmt: skip
                out.append(c.execute(sql, (key,)).fetchall())
    return out


def test_compare_and_set_refuses_a_stale_batch_and_writes_nothing(online: str, feast_store) -> None:
    state = open_state_store(feast_store(online), NAMESPACE, H)
    assert state.commit("t", update(NO_OFFSET, 10)) is None
    stale = update(NO_OFFSET, 20, users={5: SEQ}, pins={5: PIN})
    assert state.commit("t", stale) == Conflict(partition=0, expected=NO_OFFSET, found=10)
    assert state.applied("t", [0, 1]) == {0: 10, 1: NO_OFFSET}
    assert state.load_users([5]) == {} and state.load_pins([5]) == {}
    assert state.load_users([1]) == {1: SEQ}
    state.close()


def test_pin_deltas_merge_in_the_store(online: str, feast_store) -> None:
    store = feast_store(online)
    state = open_state_store(store, NAMESPACE, H)
    late = decay.Decayed((0.0, 4.0, 0.0, 0.0), T - 3_600_000)  # one half-life older
    newer = decay.Decayed((1.0, 0.0, 0.0, 0.0), T + 3_600_000)  # one half-life newer
    assert state.commit("t", update(NO_OFFSET, 1, users={})) is None
    assert state.commit("t", update(1, 2, users={}, pins={1: late})) is None
    [got] = state.load_pins([1]).values()
    assert got.ref_ms == T
    assert got.values == pytest.approx((1.0, 0.5 + 2.0, 0.0, 2.25), rel=1e-12)
    assert pin_row_times(store, 1) == (T, T // 1000)  # a late delta leaves the row's time as it was
    assert state.commit("t", update(2, 3, users={}, pins={1: newer})) is None
    [got] = state.load_pins([1]).values()
    assert got.ref_ms == T + 3_600_000
    assert got.values == pytest.approx((0.5 + 1.0, 1.25, 0.0, 1.125), rel=1e-12)
    assert pin_row_times(store, 1) == (T + 3_600_000, (T + 3_600_000) // 1000)
    state.close()


def pin_row_times(store: feast.FeatureStore, pin_id: int) -> tuple[int, int]:
    """The pin row's last_event_ts_ms and its Feast event time (whole seconds), via Feast."""
    got = store.get_online_features(["pin_engagement:last_event_ts_ms"], [{"pin_id": pin_id}])
    row = got.to_dict(include_event_timestamps=True)
    return row["last_event_ts_ms"][0], row["last_event_ts_ms__ts"][0]


def progress(store: feast.FeatureStore, topic: str = "t") -> dict[int, tuple]:
    got = read_progress(store, NAMESPACE, topic)
    return {p.partition: (p.applied, p.newest_event_ms, p.committed_ms) for p in got}


def test_progress_commits_with_the_offsets_and_a_conflict_writes_neither(online: str, feast_store) -> None:  # fmt: skip
    store = feast_store(online)
    state = open_state_store(store, NAMESPACE, H)
    first = update(NO_OFFSET, 10, newest_event_ms={0: T}, write_ms=T + 50)
    assert state.commit("t", first) is None
    assert progress(store) == {0: (10, T, T + 50)}
    stale = update(NO_OFFSET, 20, offsets={0: OffsetMove(NO_OFFSET, 20), 1: OffsetMove(NO_OFFSET, 4)}, newest_event_ms={0: T + 9000, 1: T}, write_ms=T + 99)  # fmt: skip
    assert state.commit("t", stale) == Conflict(partition=0, expected=NO_OFFSET, found=10)
    assert progress(store) == {0: (10, T, T + 50)}  # partition 1 was not written either
    assert progress(store, "other") == {}
    state.close()


def test_the_newest_event_time_never_moves_back(online: str, feast_store) -> None:
    store = feast_store(online)
    state = open_state_store(store, NAMESPACE, H)
    moves = {0: OffsetMove(NO_OFFSET, 5), 1: OffsetMove(NO_OFFSET, 2)}
    assert state.commit("t", update(0, 0, offsets=moves, newest_event_ms={0: T, 1: T - 7}, write_ms=T + 1)) is None  # fmt: skip
    late = {0: OffsetMove(5, 9), 1: OffsetMove(2, 3)}  # partition 0: late events; 1: newer
    assert state.commit("t", update(0, 0, offsets=late, newest_event_ms={0: T - 60_000, 1: T + 3}, write_ms=T + 2)) is None  # fmt: skip
    assert progress(store) == {0: (9, T, T + 2), 1: (3, T + 3, T + 2)}
    dead_only = {
        0: OffsetMove(9, 12)
    }  # dead letters only: the commit time moves, not the event time
    assert state.commit("t", update(0, 0, offsets=dead_only, newest_event_ms={}, write_ms=T + 3)) is None  # fmt: skip
    assert progress(store)[0] == (12, T, T + 3)
    state.close()


def test_a_partition_with_no_event_yet_reads_as_none(online: str, feast_store) -> None:
    store = feast_store(online)
    state = open_state_store(store, NAMESPACE, H)
    assert state.commit("t", update(NO_OFFSET, 3, newest_event_ms={}, write_ms=T)) is None
    assert read_progress(store, NAMESPACE, "t") == [PartitionProgress("t", 0, 3, None, T)]
    state.close()


def test_a_state_db_of_an_older_worker_gains_progress_and_keeps_its_offsets(feast_store) -> None:
    store = feast_store("sqlite")
    prefix = re.sub(r"\W", "_", f"{NAMESPACE}:{store.project}")
    with sqlite3.connect(sqlite_path(store)) as old:  # the tables as the worker made them before
        old.executescript(
            f'CREATE TABLE "{prefix}_offsets" (tp TEXT PRIMARY KEY, applied INTEGER NOT NULL);'
            f'CREATE TABLE "{prefix}_users" (user_id INTEGER PRIMARY KEY, seq BLOB NOT NULL);'
            f'CREATE TABLE "{prefix}_pins" (pin_id INTEGER PRIMARY KEY, c0 REAL, c1 REAL,'
            " c2 REAL, c3 REAL, ref_ms INTEGER NOT NULL);"
            f"INSERT INTO \"{prefix}_offsets\" VALUES ('t:0', 41), ('t:2', 7), ('tx:0', 3);"
        )
    old.close()
    assert progress(store) == {0: (41, None, None), 2: (7, None, None)}
    state = open_state_store(store, NAMESPACE, H)
    assert state.applied("t", [0, 2]) == {0: 41, 2: 7}
    assert state.commit("t", update(41, 60, newest_event_ms={0: T}, write_ms=T + 5)) is None
    assert progress(store) == {0: (60, T, T + 5), 2: (7, None, None)}
    state.close()


def test_a_redis_namespace_an_older_worker_wrote_is_refused_and_left_as_it_was(feast_store) -> None:
    store = feast_store("redis")
    state = open_state_store(store, NAMESPACE, H)  # a new namespace is marked with the layout
    assert state.commit("t", update(NO_OFFSET, 5)) is None
    again = open_state_store(store, NAMESPACE, H)  # marked with our layout: opens
    assert again.applied("t", [0]) == {0: 5}
    again.close()
    state.client.delete(state.names.redis_layout)  # offsets without a mark: layout 1
    with pytest.raises(StateLayoutError, match=r"layout 1 .*--state-namespace") as refused:
        open_state_store(store, NAMESPACE, H)
    assert refused.value.exit_code == 1 and "\n" not in str(refused.value)
    assert state.applied("t", [0]) == {0: 5} and not state.client.exists(state.names.redis_layout)
    state.client.set(state.names.redis_layout, "3")  # a newer worker's
    with pytest.raises(StateLayoutError, match="layout '3'; this worker reads layout 2"):
        open_state_store(store, NAMESPACE, H)
    state.close()
