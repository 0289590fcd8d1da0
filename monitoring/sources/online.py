"""The readers of the online store and the stream state: sampled rows of each view, the
history-state coverage of a sample of active users, and the stream's applied progress.

Every function here does I/O and raises ``UnavailableError`` (naming the store) when the
store does not answer; the numbers are made by the pure functions of ``rows``/``stream``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import feast
import pyarrow.dataset as ds

from monitoring.sources.rows import Rows, spread
from towerline.core.contracts import PIN_ENGAGEMENT, USER_HISTORY_STATE, USER_REALTIME_SEQ
from towerline.core.online_sample import read_event_times, sample_rows

# Features read with the row sample, per view (the row timestamp always comes along).
FIELDS: dict[str, tuple[str, ...]] = {
    USER_REALTIME_SEQ: ("event_ts_ms", "updated_ts_ms"),
    PIN_ENGAGEMENT: ("last_event_ts_ms",),
}


def store_name(store: feast.FeatureStore) -> str:
    """How messages name the online store: ``redis host:port`` or ``sqlite <path>``."""
    online = store.config.online_store
    if online.type == "redis":
        return f"redis {online.connection_string.split(',')[0]}"
    from towerline.core.online_layout import sqlite_path

    return f"sqlite {sqlite_path(store)}"


def read_rows(
    store: feast.FeatureStore,
    view: str,
    limit: int,
    served: str | None = None,
    scan_count: int = 1000,
) -> tuple[Rows, list[int]]:
    """A sample of ``view``'s rows as numbers, and the user ids it holds (user views).

    ``user_history_state`` is sampled among the rows of the ``served`` version only.
    """
    where = {"model_version": served} if view == USER_HISTORY_STATE and served else None
    found = sample_rows(
        store, view, limit, fields=FIELDS.get(view, ()), entity_filter=where, scan_count=scan_count
    )
    updated, newest, event_ms = [], [], []
    for row in found.rows:
        event_ms.append(int(row.event_ts_ms))
        if view == USER_REALTIME_SEQ:
            up, times = row.values.get("updated_ts_ms"), row.values.get("event_ts_ms")
            if up and times:
                updated.append(int(up))
                newest.append(int(max(times)))
    rows = Rows(
        view=view,
        event_ms=tuple(event_ms),
        total=found.total,
        exhaustive=found.exhaustive,
        updated_ms=tuple(updated),
        newest_event_ms=tuple(newest),
        scanned=found.scanned,
    )
    users = [int(r.key["user_id"]) for r in found.rows if "user_id" in r.key]
    return rows, users


def lake_users(lake: Path, limit: int) -> tuple[list[int], int]:
    """Up to ``limit`` user ids of the lake's ``users`` table, spread over it, and its size."""
    path = Path(lake) / "users"
    if not path.is_dir():
        return [], 0
    ids = ds.dataset(path, format="parquet").to_table(columns=["user_id"])["user_id"]
    values = ids.to_numpy().tolist()
    return spread(values, limit), len(values)


def states_found(store: feast.FeatureStore, users: Sequence[int], version: str) -> int:
    """How many of ``users`` have a ``user_history_state`` row of ``version`` online."""
    keys = [{"user_id": int(u), "model_version": version} for u in users]
    return sum(t is not None for t in read_event_times(store, USER_HISTORY_STATE, keys))


def read_progress(store: feast.FeatureStore, namespace: str, topic: str) -> list[object]:
    """The stream state's per-partition progress (applied offset, newest event time)."""
    from towerline.core.stream_progress import read_progress as read

    return list(read(store, namespace, topic))


def end_offsets(bootstrap: str, topic: str, timeout_s: float) -> dict[int, int]:
    """The broker's end offset of each partition of ``topic``."""
    from towerline.core.stream_progress import end_offsets as ends

    return dict(ends(bootstrap, topic, timeout_s))
