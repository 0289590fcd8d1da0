"""Read what the model needs from the Parquet lake (the only I/O of the data path)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model.config import ModelConfig
from model.tables import EventLog, PinTable, UserTable, encode_demographics
from schemas.lake import LakeError, partitions, read_partition, read_table, table_dir
from towerline.core.contracts import CONVERSION_ACTIONS, ENGAGEMENT_ACTIONS
from towerline.core.slots import interest_slots


@dataclasses.dataclass(frozen=True)
class Window:
    """The dt partitions used, both ends inclusive."""

    start: dt.date
    end: dt.date

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Window:
        return cls(dt.date.fromisoformat(data["start"]), dt.date.fromisoformat(data["end"]))


@dataclasses.dataclass(frozen=True)
class LakeData:
    """Everything training and evaluation read, for one window."""

    offsite: EventLog
    engagements: EventLog
    catalog: PinTable  # the pins table plus any event pin it lacks
    users: UserTable
    window: Window


def resolve_window(lake: Path, until: dt.date | None, days: int | None) -> Window:
    """The last ``days`` offsite partitions up to ``until`` (default: all / the last)."""
    present = [d for d in partitions(lake, "offsite_conversions") if until is None or d <= until]
    if not present:
        raise LakeError(f"no offsite_conversions partitions in {lake} up to {until}")
    end = present[-1]
    start = present[0] if days is None else max(present[0], end - dt.timedelta(days=days - 1))
    return Window(start, end)


def read_events(lake: Path, table: str, window: Window, symbols: tuple[str, ...]) -> EventLog:
    """Events of ``table`` in ``window`` -> sorted ``EventLog`` (empty if none)."""
    days = [d for d in partitions(lake, table) if window.start <= d <= window.end]
    parts = [read_partition(lake, table, d) for d in days]
    if not parts:
        empty = np.zeros(0, np.int64)
        return EventLog(empty, empty, empty, empty)
    events = pa.concat_tables(parts)
    codes = pc.index_in(events["action"], value_set=pa.array(symbols, pa.string()))
    action = codes.fill_null(-1).to_numpy().astype(np.int64) + 1
    ts = events["event_ts"].cast(pa.int64()).to_numpy() // 1000
    return EventLog.from_arrays(
        events["user_id"].to_numpy(), events["pin_id"].to_numpy(), action, ts
    )


def _latest_rows(ids: np.ndarray, updated: np.ndarray) -> np.ndarray:
    """Row of the latest version of each id, sorted by id."""
    order = np.lexsort((updated, ids))
    last = np.ones(len(order), dtype=bool)
    last[:-1] = ids[order][1:] != ids[order][:-1]
    return order[last]


def read_pins(lake: Path) -> PinTable:
    """The pins snapshot (latest row per pin)."""
    if not table_dir(lake, "pins").is_dir():
        return PinTable.empty()
    pins = read_table(lake, "pins")
    ids = pins["pin_id"].to_numpy()
    rows = _latest_rows(ids, pins["updated_ts"].cast(pa.int64()).to_numpy())
    interests, conf = interest_slots(pins["interest_ids"], pins["interest_confidences"])
    return PinTable(ids[rows].astype(np.int64), interests[rows], conf[rows])


def read_users(lake: Path, cfg: ModelConfig) -> UserTable:
    """The users snapshot, demographics encoded with ``cfg``'s bucket counts."""
    if not table_dir(lake, "users").is_dir():
        return UserTable(np.zeros(0, np.int64), np.zeros((0, 4), np.int64))
    users = read_table(lake, "users")
    ids = users["user_id"].to_numpy()
    rows = _latest_rows(ids, users["updated_ts"].cast(pa.int64()).to_numpy())
    columns = [users[c].to_numpy(zero_copy_only=False)[rows] for c in _DEMO_COLUMNS]
    codes = encode_demographics(*columns, cfg.country_buckets, cfg.segment_buckets)
    return UserTable(ids[rows].astype(np.int64), codes)


_DEMO_COLUMNS = ("age_bucket", "gender", "country", "segment")


def load_lake(
    lake: Path,
    until: dt.date | None = None,
    days: int | None = None,
    cfg: ModelConfig | None = None,
    window: Window | None = None,
) -> LakeData:
    """Offsite + engagement events of the window, the catalogue, the user profiles."""
    lake = Path(lake)
    window = window or resolve_window(lake, until, days)
    offsite = read_events(lake, "offsite_conversions", window, CONVERSION_ACTIONS)
    engagements = read_events(lake, "engagements", window, ENGAGEMENT_ACTIONS)
    catalog = read_pins(lake).with_pins(np.unique(offsite.pin))
    users = read_users(lake, cfg or ModelConfig())
    return LakeData(offsite, engagements, catalog, users, window)
