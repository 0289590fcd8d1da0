"""The on-disk index store: atomic directories, pointer files, rollback and pruning.

    <INDEXES>/<model_name>/<version>-<built_at>/{index.bin, metadata.json}
    <INDEXES>/<model_name>/<version>-<built_at>-shard<i>of<S>/  one shard of a set (S > 1)
    <INDEXES>/<model_name>/current        {"dir": ...}  newest published build
    <INDEXES>/<model_name>/serving.json   what serving loads (written by batch.publish)

A directory appears whole (staged, fsynced, renamed); a pointer is a JSON file replaced
with ``os.replace`` after fsync, so a reader sees the old or the new one, never half.
The shards of a set (``towerline.core.ann.sets``) are flipped to, rolled back and pruned
together; ``current`` then names shard 0 in ``dir`` and all of them in ``shards``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from towerline.core.ann.hnsw import METADATA_FILE, AnnError, read_metadata
from towerline.core.ann.sets import SHARD, IndexSet, group_sets, set_holding, stamp, verify_set
from towerline.core.files import publish_dir, write_json_atomic
from towerline.core.names import check_name

CURRENT, SERVING = "current", "serving.json"


def read_pointer(path: Path) -> dict[str, Any] | None:
    """A pointer file's JSON object, None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        # Pruning or flipping on a guess could delete or replace the live build.
        raise AnnError(f"{path} is not valid JSON ({exc}); restore it or publish again") from exc
    if not isinstance(doc, dict):
        raise AnnError(f"{path} does not hold a JSON object; restore it or publish again")
    return doc


# --- the index store ---------------------------------------------------------------


def model_root(indexes: Path, model_name: str) -> Path:
    """``INDEXES/<model_name>``; a name that is not a plain name (``../x``) is refused, so
    no caller can write, flip or prune outside the index store."""
    return Path(indexes) / check_name(model_name)


def new_staging(indexes: Path, model_name: str) -> Path:
    """A fresh hidden directory to build into (same filesystem, so the rename is atomic)."""
    path = model_root(indexes, model_name) / f".staging-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    return path


def dir_name(meta: dict[str, Any]) -> str:
    """``<version>-<built_at as YYYYmmddTHHMMSSZ>``, e.g. ``v3-20250701T020000Z``; a shard
    of a set adds its place, e.g. ``v3-20250701T020000Z-shard1of4``."""
    name = f"{meta['model_version']}-{stamp(meta['built_at'])}"
    place = meta.get(SHARD)
    return f"{name}-shard{place['index']}of{place['count']}" if place else name


def list_indexes(indexes: Path, model_name: str) -> list[tuple[Path, dict[str, Any]]]:
    """Published index directories with their metadata, oldest build first."""
    root = model_root(indexes, model_name)
    found = [
        (p, read_metadata(p))
        for p in (root.iterdir() if root.is_dir() else [])
        if p.is_dir() and not p.name.startswith(".") and (p / METADATA_FILE).is_file()
    ]
    return sorted(found, key=lambda item: (item[1]["built_at"], item[0].name))


def current_dir(indexes: Path, model_name: str) -> Path | None:
    pointer = read_pointer(model_root(indexes, model_name) / CURRENT)
    return model_root(indexes, model_name) / pointer["dir"] if pointer else None


def flip_current(
    indexes: Path, model_name: str, directory: Path, now: dt.datetime, shards: Sequence[str] = ()
) -> dict:
    """Point ``current`` at ``directory`` (a published index of this model); for a set,
    ``directory`` is shard 0 and ``shards`` names every shard's directory."""
    meta = read_metadata(directory)
    old = read_pointer(model_root(indexes, model_name) / CURRENT)
    doc = {
        "dir": directory.name,
        "model_version": meta["model_version"],
        "flipped_at": now.isoformat(),
        "previous": old["dir"] if old else None,
    }
    if shards:
        doc["shards"] = list(shards)
    write_json_atomic(model_root(indexes, model_name) / CURRENT, doc)
    return doc


def publish_index(
    staging: Path, indexes: Path, model_name: str, keep: int, now: dt.datetime
) -> Path:
    """Move a staged index into place, flip ``current`` to it, keep the last ``keep``."""
    final = publish_dir(staging, model_root(indexes, model_name), dir_name(read_metadata(staging)))
    flip_current(indexes, model_name, final, now)
    prune(indexes, model_name, keep)
    return final


def publish_set(
    stagings: list[Path], indexes: Path, model_name: str, keep: int, now: dt.datetime
) -> list[Path]:
    """Move the staged shards of one set into place (shard order), then flip ``current``
    to the set and keep the last ``keep`` sets. A crash between the moves leaves an
    incomplete set that ``current`` never names and that publish refuses."""
    root = model_root(indexes, model_name)
    finals = [publish_dir(s, root, dir_name(read_metadata(s))) for s in stagings]
    flip_current(indexes, model_name, finals[0], now, [p.name for p in finals])
    prune(indexes, model_name, keep)
    return finals


def index_sets(indexes: Path, model_name: str) -> list[IndexSet]:
    """The published builds grouped into sets (a plain build is a set of one), oldest first."""
    return group_sets(list_indexes(indexes, model_name))


def current_set(indexes: Path, model_name: str) -> IndexSet | None:
    """The set ``current`` names, None when it names none that is on disk."""
    current = current_dir(indexes, model_name)
    return set_holding(index_sets(indexes, model_name), current.name) if current else None


def rollback(indexes: Path, model_name: str, now: dt.datetime) -> dict[str, Any]:
    """Flip ``current`` to the newest verified build (or whole set) older than the current."""
    current = current_dir(indexes, model_name)
    if current is None:
        raise AnnError(f"no current index of {model_name!r} in {indexes}; nothing to roll back")
    sets = index_sets(indexes, model_name)
    here = set_holding(sets, current.name)
    older = sets[: sets.index(here)] if here else []
    for candidate in reversed(older):
        try:
            verify_set(candidate)
        except AnnError:
            continue  # a damaged build or incomplete set is skipped, never served
        shards = candidate.dirs if candidate.sharded else []
        return flip_current(indexes, model_name, candidate.paths[0], now, shards)
    raise AnnError(
        f"cannot roll back {model_name!r}: no intact index older than {current.name} "
        f"(kept: {[d for s in sets for d in s.dirs]})"
    )


def pinned_dirs(indexes: Path, model_name: str) -> set[str]:
    """Build directories pruning must keep: the one ``current`` names, the one
    ``serving.json`` names and that pointer's ``previous`` (serving rolls back to it)."""
    root = model_root(indexes, model_name)
    current = read_pointer(root / CURRENT) or {}
    serving = read_pointer(root / SERVING) or {}
    previous = serving.get("previous")
    named = (current.get("dir"), serving.get("dir"))
    named += (previous.get("dir"),) if isinstance(previous, dict) else ()
    return {d for d in named if isinstance(d, str)}


def prune(indexes: Path, model_name: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` sets (a plain build is a set of one); never a
    set one of whose directories ``pinned_dirs`` names. Returns the deleted directory names."""
    if keep < 1:
        raise AnnError(f"keep must be >= 1, got {keep}")
    pinned = pinned_dirs(indexes, model_name)
    sets = index_sets(indexes, model_name)
    doomed = [p for s in sets[:-keep] if not pinned & set(s.dirs) for p in s.paths]
    for path in doomed:
        shutil.rmtree(path)
    return [p.name for p in doomed]
