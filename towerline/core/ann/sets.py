"""Index sets: what the store serves, rolls back and prunes as one unit.

A plain build is a set of one. A sharded build (``batch index --shards S``) is S normal
builds of one model version over one corpus snapshot, one per pin-id hash shard, each in
its own directory with its own ``index.bin`` and ``metadata.json``; that metadata names
its place in the set::

    "shard": {"index": i, "count": S, "set": "<version>-<stamp>-<snapshot>-x<S>",
              "set_items": <pins in all S shards>}

A set is servable only whole: every shard 0..S-1 present once, all of the same model,
version, item tower, corpus snapshot, build time, dim and metric. ``set_problems`` says
what is wrong (pure, on metadata); ``verify_set`` adds each shard's sha256 check.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from towerline.core.ann.hnsw import AnnError, verify_index

SHARD = "shard"  # the metadata key of a shard's place in its set
# What every shard of one set must agree on (the version rule holds for the whole set).
SET_FACTS = ("model_name", "model_version", "corpus_snapshot", "built_at", "dim", "metric")

Build = tuple[Path, dict[str, Any]]


def stamp(built_at: str) -> str:
    """An ISO build time -> ``YYYYmmddTHHMMSSZ`` (UTC), as directory names carry it."""
    return f"{dt.datetime.fromisoformat(built_at).astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"


def set_id(facts: dict[str, Any], count: int) -> str:
    """The id the S shards of one build share: version, build time, snapshot and S."""
    version, snapshot = facts["model_version"], facts["corpus_snapshot"]
    return f"{version}-{stamp(facts['built_at'])}-{snapshot}-x{count}"


def shard_facts(facts: dict[str, Any], index: int, count: int, set_items: int) -> dict[str, Any]:
    """``facts`` (a build's version metadata) with its place in a set of ``count`` shards."""
    place = {"index": index, "count": count, "set": set_id(facts, count), "set_items": set_items}
    return {**facts, SHARD: place}


@dataclasses.dataclass(frozen=True)
class IndexSet:
    """One servable unit of the store: a plain build, or the shards of one set found on
    disk (by shard index; a damaged set may miss some or hold one twice)."""

    key: str  # the set id, or the plain build's directory name
    builds: tuple[Build, ...]

    @property
    def sharded(self) -> bool:
        return SHARD in self.builds[0][1]

    @property
    def count(self) -> int:
        """The number of shards the set should hold (1 for a plain build)."""
        return int(self.builds[0][1][SHARD]["count"]) if self.sharded else 1

    @property
    def meta(self) -> dict[str, Any]:
        return self.builds[0][1]

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.builds]

    @property
    def dirs(self) -> list[str]:
        return [p.name for p, _ in self.builds]


def _key(path: Path, meta: dict[str, Any]) -> str:
    place = meta.get(SHARD)
    return f"set:{place.get('set')}" if isinstance(place, dict) else f"build:{path.name}"


def group_sets(builds: Iterable[Build]) -> list[IndexSet]:
    """Published builds (``list_indexes``) -> sets, oldest first (built_at, then name)."""
    groups: dict[str, list[Build]] = {}
    for path, meta in builds:
        groups.setdefault(_key(path, meta), []).append((path, meta))
    sets = [
        IndexSet(key.partition(":")[2], tuple(sorted(found, key=_shard_order)))
        for key, found in groups.items()
    ]
    return sorted(sets, key=lambda s: (str(s.meta.get("built_at")), s.builds[0][0].name))


def _shard_order(build: Build) -> tuple[int, str]:
    place = build[1].get(SHARD) or {}
    return int(place.get("index", 0)), build[0].name


def set_holding(sets: Iterable[IndexSet], directory: str | None) -> IndexSet | None:
    """The set one of whose builds is the directory named ``directory``."""
    return next((s for s in sets if directory in s.dirs), None)


def set_problems(unit: IndexSet) -> list[str]:
    """What keeps ``unit`` from being served whole (empty when nothing), from metadata."""
    if not unit.sharded:
        return []
    count, name = unit.count, unit.key
    places = [m.get(SHARD) or {} for _, m in unit.builds]
    problems = []
    indexes = [p.get("index") for p in places]
    missing = [i for i in range(count) if i not in indexes]
    if missing:
        problems.append(f"is missing shard {', '.join(map(str, missing))} of {count}")
    doubled = sorted({i for i in indexes if indexes.count(i) > 1}, key=str)
    if doubled:
        problems.append(f"holds shard {', '.join(map(str, doubled))} twice")
    stray = [i for i in indexes if not isinstance(i, int) or not 0 <= i < count]
    if stray:
        problems.append(f"holds shard {', '.join(map(str, stray))}, outside 0..{count - 1}")
    for fact in SET_FACTS:
        seen = sorted({str(m.get(fact)) for _, m in unit.builds})
        if len(seen) > 1:
            problems.append(f"mixes {fact} {', '.join(seen)}")
    towers = {(m.get("sha256") or {}).get("item_tower") for _, m in unit.builds}
    if len(towers) > 1:
        problems.append("mixes item towers")
    if any(p.get("count") != count for p in places):
        problems.append("disagrees on its shard count")
    if any(p.get("set") != name for p in places):
        problems.append("holds shards of another set")
    if not problems:
        if set_id(unit.meta, count) != name:
            problems.append(f"is named for another build than its shards' {set_id(unit.meta, count)}")  # fmt: skip
        total = sum(int(m.get("num_items", 0)) for _, m in unit.builds)
        if any(p.get("set_items") != total for p in places):
            problems.append(f"holds {total} pins, its shards say {places[0].get('set_items')}")
    return [f"index set {name} {p}" for p in problems]


def verify_set(unit: IndexSet) -> list[dict[str, Any]]:
    """The metadata of every build of ``unit`` (by shard) once the set is whole and each
    ``index.bin`` matches its sha256; ``AnnError`` naming what is wrong otherwise."""
    problems = set_problems(unit)
    if problems:
        raise AnnError("; ".join(problems))
    return [verify_index(path) for path in unit.paths]
