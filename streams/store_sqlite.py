"""The state store on SQLite: the Feast online database file, one transaction per batch.

The state tables live in the same file as Feast's online tables, so one
``BEGIN IMMEDIATE … COMMIT`` covers the applied offsets and progress, the state and the
Feast rows. Table names come from ``towerline.core.stream_progress``; the progress table is
created when missing, so a database of an older worker gains it on the next start.
``BEGIN IMMEDIATE`` takes the write lock before the compare-and-set is read, so several
worker processes on one host serialise their batches (pins are shared across them).
"""

import datetime as dt
import functools
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar

from feast.infra.online_stores.helpers import extract_text_and_num
from feast.protos.feast.types.Value_pb2 import Value

from streams import decay, sequence
from streams.decay import Decayed
from streams.feast_layout import StoreLayout, ViewLayout, pin_values, user_values
from streams.sequence import Seq
from streams.state import NO_OFFSET, Conflict
from streams.update import BatchUpdate
from towerline.core.stream_progress import NO_EVENT, StateNames, partition_field

T = TypeVar("T")
_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit
_EPOCH = dt.datetime(1970, 1, 1)  # naive UTC, as Feast stores timestamps in SQLite


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(self: "SqliteStateStore", *args: Any) -> T:
        with self._lock:
            return method(self, *args)

    return wrapper


class SqliteStateStore:
    """``StateStore`` inside the Feast SQLite online store file."""

    def __init__(self, path: str, layout: StoreLayout, names: StateNames, half_life_ms: float) -> None:  # fmt: skip
        self.layout, self.half_life_ms = layout, half_life_ms
        self._offsets, self._progress, self._users, self._pins = map(
            names.sqlite_table, ("offsets", "progress", "users", "pins")
        )
        # Autocommit mode: transactions are explicit. The rebalance listener runs on
        # kafka-python's IO thread while the worker thread waits, hence no thread check.
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.path, self.address = path, f"sqlite {path}"  # for messages
        self._lock = threading.RLock()  # commits run on the committer thread, reads on others
        self.conn.executescript(
            f"CREATE TABLE IF NOT EXISTS {self._offsets} (tp TEXT PRIMARY KEY, applied INTEGER NOT NULL);"
            f"CREATE TABLE IF NOT EXISTS {self._progress} (tp TEXT PRIMARY KEY,"
            " newest_event_ms INTEGER NOT NULL, committed_ms INTEGER NOT NULL);"
            f"CREATE TABLE IF NOT EXISTS {self._users} (user_id INTEGER PRIMARY KEY, seq BLOB NOT NULL);"
            f"CREATE TABLE IF NOT EXISTS {self._pins} (pin_id INTEGER PRIMARY KEY, c0 REAL, c1 REAL,"
            " c2 REAL, c3 REAL, ref_ms INTEGER NOT NULL);"
        )

    @_locked
    def applied(self, topic: str, partitions: Collection[int]) -> dict[int, int]:
        names = {partition_field(topic, p): p for p in partitions}
        found = dict.fromkeys(names.values(), NO_OFFSET)
        for chunk in _chunks(list(names)):
            sql = f"SELECT tp, applied FROM {self._offsets} WHERE tp IN ({_marks(chunk)})"
            for tp, applied in self.conn.execute(sql, chunk):
                found[names[tp]] = applied
        return found

    @_locked
    def load_users(self, user_ids: Collection[int]) -> dict[int, Seq]:
        out = {}
        for chunk in _chunks(list(user_ids)):
            sql = f"SELECT user_id, seq FROM {self._users} WHERE user_id IN ({_marks(chunk)})"
            out.update((u, sequence.decode(blob)) for u, blob in self.conn.execute(sql, chunk))
        return out

    @_locked
    def load_pins(self, pin_ids: Collection[int]) -> dict[int, Decayed]:
        out = {}
        for chunk in _chunks(list(pin_ids)):
            sql = f"SELECT pin_id, c0, c1, c2, c3, ref_ms FROM {self._pins} WHERE pin_id IN ({_marks(chunk)})"  # fmt: skip
            out.update((p, Decayed((c0, c1, c2, c3), ref)) for p, c0, c1, c2, c3, ref in self.conn.execute(sql, chunk))  # fmt: skip
        return out

    def prepare(self, topic: str, update: BatchUpdate) -> tuple[str, BatchUpdate]:
        return topic, update  # SQLite does its work inside the transaction

    def apply(self, prepared: tuple[str, BatchUpdate]) -> Conflict | None:
        return self.commit(*prepared)

    @_locked
    def commit(self, topic: str, update: BatchUpdate) -> Conflict | None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            conflict = self._check(topic, update)
            if conflict is None:
                self._write(topic, update)
                self.conn.execute("COMMIT")
                return None
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("ROLLBACK")
        return conflict

    def _check(self, topic: str, update: BatchUpdate) -> Conflict | None:
        current = self.applied(topic, update.offsets)
        for partition, move in sorted(update.offsets.items()):
            if current[partition] != move.expected:
                return Conflict(partition, move.expected, current[partition])
        return None

    def _write(self, topic: str, update: BatchUpdate) -> None:
        """State, Feast rows and offsets, inside the caller's transaction."""
        c = self.conn
        users = update.users
        c.executemany(
            f"INSERT OR REPLACE INTO {self._users} (user_id, seq) VALUES (?, ?)",
            [(u, sequence.encode(s)) for u, s in users.items()],
        )
        stored = self.load_pins(update.pins)
        merged = {
            p: decay.merge(stored.get(p), d, self.half_life_ms) for p, d in update.pins.items()
        }
        c.executemany(
            f"INSERT OR REPLACE INTO {self._pins} VALUES (?, ?, ?, ?, ?, ?)",
            [(p, *s.values, s.ref_ms) for p, s in merged.items() if s is not None],
        )
        now = _naive_utc(update.write_ms)
        user_rows = ((u, user_values(s, update.write_ms), s[-1].ts_ms) for u, s in users.items())
        pin_rows = ((p, pin_values(s), s.ref_ms) for p, s in merged.items() if s is not None)
        self._feast_rows(self.layout.user, user_rows, now)
        self._feast_rows(self.layout.pin, pin_rows, now)
        c.executemany(
            f"INSERT OR REPLACE INTO {self._offsets} (tp, applied) VALUES (?, ?)",
            [(partition_field(topic, p), m.applied) for p, m in update.offsets.items()],
        )
        newest = update.newest_event_ms
        c.executemany(
            f"INSERT INTO {self._progress} (tp, newest_event_ms, committed_ms) VALUES (?, ?, ?)"
            " ON CONFLICT(tp) DO UPDATE SET committed_ms = excluded.committed_ms,"
            " newest_event_ms = max(newest_event_ms, excluded.newest_event_ms)",
            [
                (partition_field(topic, p), newest.get(p, NO_EVENT), update.write_ms)
                for p in update.offsets
            ],
        )

    def _feast_rows(
        self, view: ViewLayout, rows: Iterator[tuple[int, dict[str, Value], int]], now: dt.datetime
    ) -> None:
        """Upsert rows exactly as Feast's SqliteOnlineStore.online_write_batch does."""
        sql = (
            f'INSERT INTO "{view.sqlite_table}" (entity_key, feature_name, value, value_text,'
            " event_ts, created_ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name)"
            " DO UPDATE SET value = excluded.value, value_text = excluded.value_text,"
            " event_ts = excluded.event_ts, created_ts = excluded.created_ts"
        )
        params = []
        for entity_id, values, event_ms in rows:
            key = view.keys(entity_id)
            event_ts = _naive_utc(event_ms)
            for name in view.features:
                val = values[name]
                text = extract_text_and_num(val, False)[0]
                params.append((key, name, val.SerializeToString(), text, event_ts, now))
        self.conn.executemany(sql, params)

    def offsets_reset_hint(self, topic: str, partitions: Collection[int]) -> str:
        """The command that forgets these partitions' applied offsets and progress (for messages)."""
        names = ", ".join(f"'{partition_field(topic, p)}'" for p in sorted(partitions))
        offsets, progress = ("[" + t.strip('"') + "]" for t in (self._offsets, self._progress))  # [..] quotes it inside shell "..."  # fmt: skip
        return f'sqlite3 {self.path} "DELETE FROM {offsets} WHERE tp IN ({names}); DELETE FROM {progress} WHERE tp IN ({names})"'

    def close(self) -> None:
        self.conn.close()


def _naive_utc(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ms)


def _chunks(items: Sequence) -> Iterator[list]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])


def _marks(chunk: Sequence) -> str:
    return ",".join("?" * len(chunk))
