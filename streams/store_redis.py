"""The state store on Redis: one Lua script per batch is the transaction.

Keys (``ns`` = the state namespace; named in ``towerline.core.stream_progress``):
``{ns}:offsets`` hash ``"topic:partition" -> applied``; ``{ns}:progress`` hash
``"topic:partition" -> "<newest event ms>:<commit ms>"``; ``{ns}:layout`` the state layout's
version. The state itself is a field of the Feast row's hash: ``{ns}:seq`` of a user's, the
sequence (``streams.redis_rows``); ``{ns}:decay`` of a pin's, five little-endian doubles
(4 counts, ref_ms). One key per entity, not two, halves the keys and the commands Redis
runs per event. Pins are merged inside the script, because users
on every partition (so every worker) engage the same pin: a read-modify-write in Python
would lose updates. The script also writes the Feast rows (``streams.feast_layout``), so
the online copy commits with the state. Redis runs a script alone and, with AOF, persists
its effects as one MULTI/EXEC; the script checks everything before its first write
(``streams.redis_lua``), so a malformed batch writes nothing.
"""

import struct
from collections.abc import Collection
from dataclasses import dataclass

import redis

from streams.decay import Decayed
from streams.feast_layout import StoreLayout, int64_value_bytes, timestamp_bytes
from streams.redis_lua import LOAD_SCRIPT, apply_script
from streams.redis_rows import decode_user, user_record
from streams.sequence import Seq
from streams.state import NO_OFFSET, Conflict
from streams.update import BatchUpdate
from towerline.core.errors import RefusedError, UnavailableError
from towerline.core.stream_progress import NO_EVENT, STATE_LAYOUT, StateNames, partition_field

_PIN = struct.Struct("<ddddd")
_PIN_HEAD = struct.Struct("<5I")  # record framing: count, then one length per string
_FOUND = struct.Struct("<II")  # a found user in LOAD_SCRIPT's reply: index, length


@dataclass(frozen=True)
class _Prepared:
    args: list[bytes | str]
    expected: dict[int, int]  # partition -> expected applied offset, to report a conflict


class StateLayoutError(RefusedError):
    """The namespace holds state in a layout this worker does not read."""


class RedisStateStore:
    """``StateStore`` on the Redis that also holds the Feast online rows."""

    def __init__(
        self, client: redis.Redis, layout: StoreLayout, names: StateNames, half_life_ms: float
    ) -> None:
        self.client, self.layout, self.names = client, layout, names
        self.half_life_ms = half_life_ms
        self._offsets_key, self._progress_key = names.redis_offsets, names.redis_progress
        self._user_field, self._pin_field = names.redis_user_field, names.redis_pin_field
        where = client.connection_pool.connection_kwargs
        self.address = f"redis {where.get('host')}:{where.get('port')}"  # for messages
        self._project = layout.project.encode()
        user, pin = layout.user, layout.pin
        self._user_fields = [user.redis_ts_field, *user.redis_fields]
        self._pin_fields = [pin.redis_ts_field, *pin.redis_fields]
        self._script = client.register_script(apply_script(len(self._user_fields)))
        self._load = client.register_script(LOAD_SCRIPT)
        try:  # as the SQLite store creates its tables: opening prepares the store
            self._ensure_layout()
        except Exception:
            client.close()
            raise

    def _ensure_layout(self) -> None:
        """Mark a new namespace with this layout; refuse one written in another.

        An older worker's sequences and counts would read as empty here while its offsets
        say applied: every user would restart from nothing, silently.
        """
        ns = self.names.namespace
        try:
            with self.client.pipeline(transaction=False) as pipe:
                found, used = pipe.get(self.names.redis_layout).exists(self._offsets_key).execute()
            if found is None and not used:
                self.client.set(self.names.redis_layout, STATE_LAYOUT, nx=True)
                return
        except redis.RedisError as exc:
            raise UnavailableError(f"{self.address}: {exc}") from None
        mark = None if found is None else found.decode()
        if mark == STATE_LAYOUT:
            return
        where = f"layout 1 (an older worker's keys {ns}:u:*, {ns}:p:*)" if mark is None else f"layout {mark!r}"  # fmt: skip
        raise StateLayoutError(
            f"state namespace {ns!r} on {self.address} is in {where}; this worker reads layout"
            f" {STATE_LAYOUT}: run it with a new --state-namespace (it applies the topic again"
            " from its earliest retained offset), or run the version that wrote it"
        )

    def applied(self, topic: str, partitions: Collection[int]) -> dict[int, int]:
        parts = sorted(partitions)
        if not parts:
            return {}
        found = self.client.hmget(self._offsets_key, [partition_field(topic, p) for p in parts])
        return {p: NO_OFFSET if v is None else int(v) for p, v in zip(parts, found, strict=True)}

    def load_users(self, user_ids: Collection[int]) -> dict[int, Seq]:
        ids = list(user_ids)
        if not ids:
            return {}
        keys = self.layout.user.keys
        packed = struct.pack(f"<{len(ids)}q", *ids)
        reply = self._load(args=[keys.prefix, self._project, self._user_field, packed])
        out, pos = {}, 0
        while pos < len(reply):
            index, length = _FOUND.unpack_from(reply, pos)
            pos += _FOUND.size
            out[ids[index]] = decode_user(reply[pos : pos + length])
            pos += length
        return out

    def load_pins(self, pin_ids: Collection[int]) -> dict[int, Decayed]:
        ids = list(pin_ids)
        if not ids:
            return {}
        keys = self.layout.pin.keys
        with self.client.pipeline(transaction=False) as pipe:
            for pin_id in ids:
                pipe.hget(keys(pin_id) + self._project, self._pin_field)
            blobs = pipe.execute()
        out = {}
        for pin_id, blob in zip(ids, blobs, strict=True):
            if blob is not None:
                *values, ref = _PIN.unpack(blob)
                out[pin_id] = Decayed(tuple(values), int(ref))
        return out

    def commit(self, topic: str, update: BatchUpdate) -> Conflict | None:
        return self.apply(self.prepare(topic, update))

    def prepare(self, topic: str, update: BatchUpdate) -> _Prepared:
        """The script's arguments: all the CPU work of a commit, none of the waiting."""
        args: list[bytes | str] = [
            repr(self.half_life_ms), str(len(update.offsets)), str(update.write_ms),
        ]  # fmt: skip
        newest = update.newest_event_ms
        for partition, move in sorted(update.offsets.items()):
            field = partition_field(topic, partition)
            args += [field, str(move.expected), str(move.applied), str(newest.get(partition, NO_EVENT))]  # fmt: skip
        args += [
            self._users_blob(update),
            self._pins_blob(update),
            self._user_field,
            self._pin_field,
        ]
        args += [*self._user_fields, *self._pin_fields]
        expected = {p: m.expected for p, m in update.offsets.items()}
        return _Prepared(args, expected)

    def apply(self, prepared: _Prepared) -> Conflict | None:
        result = self._script(keys=[self._offsets_key, self._progress_key], args=prepared.args)
        if result == 1:
            return None
        _, field, found = result
        partition = int(field.rsplit(b":", 1)[1])
        return Conflict(partition, prepared.expected[partition], int(found))

    def _users_blob(self, update: BatchUpdate) -> bytes:
        entity_key, n_values = self.layout.user.keys, len(self.layout.user.features)
        project, updated = self._project, int64_value_bytes(update.write_ms)
        return b"".join(
            [
                user_record(entity_key(user_id) + project, seq, updated, n_values)
                for user_id, seq in update.users.items()
            ]
        )

    def _pins_blob(self, update: BatchUpdate) -> bytes:
        parts: list[bytes] = []
        entity_key, head, project = self.layout.pin.keys, _PIN_HEAD.pack, self._project
        for pin_id, (values, ref_ms) in update.pins.items():
            key, row_time, last = entity_key(pin_id) + project, timestamp_bytes(ref_ms), int64_value_bytes(ref_ms)  # fmt: skip
            parts += (
                head(4, len(key), _PIN.size, len(row_time), len(last)),
                key,
                _PIN.pack(*values, float(ref_ms)),
                row_time,
                last,
            )
        return b"".join(parts)

    def offsets_reset_hint(self, topic: str, partitions: Collection[int]) -> str:
        """The command that forgets these partitions' applied offsets and progress (for messages)."""
        host_port = self.address.removeprefix("redis ")
        host, _, port = host_port.rpartition(":")
        fields = " ".join(f"'{partition_field(topic, p)}'" for p in sorted(partitions))
        cli = f"redis-cli -h {host} -p {port}"
        return f"{cli} HDEL '{self._offsets_key}' {fields} && {cli} HDEL '{self._progress_key}' {fields}"

    def close(self) -> None:
        self.client.close()
