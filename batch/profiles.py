"""`load-profiles`: write ``user_profile`` and ``pin_profile`` from the lake to the online store."""

import functools
from pathlib import Path

import feast
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from schemas.lake import LakeError, read_table
from towerline.core.contracts import PROFILE_TABLES
from towerline.core.featurestore import FeatureStoreError, check_online, write_online


def load_profiles(store: feast.FeatureStore, lake: Path, progress: bool = True) -> dict[str, int]:
    """Write ``user_profile`` and ``pin_profile`` from the lake's ``users/`` and ``pins/``.

    Both tables are read, and the online store reached, before anything is written, so a
    missing table or an unreachable store fails fast.
    Returns rows written per view, e.g. ``{"user_profile": 1000, "pin_profile": 2000}``.
    """
    tables = {}
    for lake_table, (view, columns) in PROFILE_TABLES.items():
        try:
            tables[view] = read_table(Path(lake), lake_table).select([*columns, "updated_ts"])
        except LakeError as exc:
            raise FeatureStoreError(f"cannot load {view}: {exc}") from exc
    check_online(store)
    counts = {}
    with _progress_bar(progress) as bar:
        for view, table in tables.items():
            task = bar.add_task(view, total=table.num_rows)
            counts[view] = write_online(
                store, view, table, on_batch=functools.partial(bar.advance, task)
            )
    return counts


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )
