"""The index and what serving is told to load (view ``index``): age of the published build
and of its corpus snapshot, and how far ``serving.json`` is behind the newest build and
the newest registered model version.

The registry is read through ``model.registry`` (Feast, which the monitor needs anyway,
imports torch already).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from model import registry as reg
from monitoring.model import (
    BEHIND_BUILT,
    BEHIND_REGISTERED,
    CORPUS_AGE,
    INDEX,
    INDEX_AGE,
    Measure,
)
from towerline.core.ann import SERVING as SERVING_FILE
from towerline.core.ann import (
    SHARD,
    AnnError,
    index_sets,
    model_root,
    read_metadata,
    read_pointer,
)

_VERSION = re.compile(r"^v(\d+)$")
_SNAPSHOT_DAY = re.compile(r"^corpus-(\d{8})-")
MANIFEST = "manifest.json"


def version_number(version: object) -> int | None:
    match = _VERSION.match(version) if isinstance(version, str) else None
    return int(match.group(1)) if match else None


def registered_versions(registry: Path, model_name: str) -> list[str]:
    """Complete versions in the registry, oldest first; candidates the retrain gate
    rejected are not versions serving is behind."""
    rejected = set(reg.rejected_versions(registry, model_name))
    return [v for v in reg.list_versions(registry, model_name) if v not in rejected]


def corpus_time(snapshot_id: object, lake: Path | None) -> tuple[dt.datetime | None, str]:
    """When the corpus snapshot's data ends: the end of its day (``manifest.json``'s ``dt``
    when the lake holds the snapshot, else the day in its id ``corpus-YYYYMMDD-…``)."""
    if not isinstance(snapshot_id, str):
        return None, "the served index names no corpus snapshot"
    day = None
    manifest = Path(lake) / "corpus" / snapshot_id / MANIFEST if lake else None
    if manifest is not None and manifest.is_file():
        try:
            day = dt.date.fromisoformat(json.loads(manifest.read_text())["dt"])
        except (ValueError, KeyError, TypeError):
            day = None
    if day is None and (match := _SNAPSHOT_DAY.match(snapshot_id)):
        day = dt.datetime.strptime(match.group(1), "%Y%m%d").date()
    if day is None:
        return None, f"cannot tell the day of corpus snapshot {snapshot_id}"
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    return end, f"corpus {snapshot_id}: engagements through {day.isoformat()}"


def index_measures(
    indexes: Path,
    model_name: str,
    now: dt.datetime,
    registry: Path | None = None,
    lake: Path | None = None,
) -> tuple[list[Measure], str | None]:
    """The index measures and the served model version (None when nothing is served)."""
    root = model_root(indexes, model_name)
    try:
        pointer = read_pointer(root / SERVING_FILE)
    except AnnError as exc:
        return _unmeasured(str(exc)), None
    if pointer is None:
        return _unmeasured(f"nothing published: no {root / SERVING_FILE}"), None
    served = pointer.get("model_version")
    served_n = version_number(served)
    out = [*_age_measures(root, pointer, now, lake)]
    builds = [unit.meta for unit in index_sets(indexes, model_name)]  # a set counts once
    built = [n for m in builds if (n := version_number(m.get("model_version"))) is not None]
    out.append(_behind(BEHIND_BUILT, "batch index", served, served_n, max(built, default=None), f"{len(builds)} builds in {root}"))  # fmt: skip
    if registry is None:
        out.append(Measure(INDEX, BEHIND_REGISTERED, None, job="publish", note="no --registry given"))  # fmt: skip
    else:
        kept = [int(v[1:]) for v in registered_versions(registry, model_name)]
        out.append(_behind(BEHIND_REGISTERED, "publish", served, served_n, max(kept, default=None), f"registered: {', '.join(f'v{k}' for k in kept) or 'none'}"))  # fmt: skip
    return out, served if isinstance(served, str) else None


def _age_measures(root: Path, pointer: dict[str, Any], now: dt.datetime, lake: Path | None) -> list[Measure]:  # fmt: skip
    directory = pointer.get("dir")
    try:
        meta = read_metadata(root / str(directory))
    except (AnnError, OSError, ValueError) as exc:
        why = f"serving.json names {directory}, which cannot be read: {exc}"
        return [Measure(INDEX, INDEX_AGE, None, job="batch index", note=why), Measure(INDEX, CORPUS_AGE, None, job="batch corpus", note=why)]  # fmt: skip
    built = dt.datetime.fromisoformat(meta["built_at"])
    place = meta.get(SHARD) or {}
    which = f"{directory} (shard 0 of a set of {place['count']})" if place else directory
    age = Measure(INDEX, INDEX_AGE, (now - built).total_seconds(), job="batch index", note=f"{which} built {built:%Y-%m-%d %H:%M} UTC")  # fmt: skip
    ends, why = corpus_time(meta.get("corpus_snapshot") or pointer.get("corpus_snapshot"), lake)
    corpus = Measure(INDEX, CORPUS_AGE, None if ends is None else max(0.0, (now - ends).total_seconds()), job="batch corpus", note=why)  # fmt: skip
    return [age, corpus]


def _behind(measure: str, job: str, served: object, served_n: int | None, newest: int | None, note: str) -> Measure:  # fmt: skip
    if served_n is None:
        return Measure(INDEX, measure, None, job=job, note=f"serving.json names no version vN ({served!r})")  # fmt: skip
    if newest is None:
        return Measure(INDEX, measure, None, job=job, note=f"nothing to compare with: {note}")
    return Measure(INDEX, measure, float(max(0, newest - served_n)), job=job, note=f"served {served}, newest v{newest}; {note}")  # fmt: skip


def _unmeasured(why: str) -> list[Measure]:
    return [
        Measure(INDEX, INDEX_AGE, None, job="batch index", note=why),
        Measure(INDEX, CORPUS_AGE, None, job="batch corpus", note=why),
        Measure(INDEX, BEHIND_BUILT, None, job="batch index", note=why),
        Measure(INDEX, BEHIND_REGISTERED, None, job="publish", note=why),
    ]
