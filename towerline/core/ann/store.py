"""The on-disk index store: atomic directories, pointer files, rollback and pruning.

    <INDEXES>/<model_name>/<version>-<built_at>/{index.bin, metadata.json}
    <INDEXES>/<model_name>/current        {"dir": ...}  newest published build
    <INDEXES>/<model_name>/serving.json   what serving loads (written by batch.publish)

A directory appears whole (staged, fsynced, renamed); a pointer is a JSON file replaced
with ``os.replace`` after fsync, so a reader sees the old or the new one, never half.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from towerline.core.ann.hnsw import METADATA_FILE, AnnError, read_metadata, verify_index
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
    """``<version>-<built_at as YYYYmmddTHHMMSSZ>``, e.g. ``v3-20250701T020000Z``."""
    built = dt.datetime.fromisoformat(meta["built_at"]).astimezone(dt.UTC)
    return f"{meta['model_version']}-{built:%Y%m%dT%H%M%SZ}"


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


def flip_current(indexes: Path, model_name: str, directory: Path, now: dt.datetime) -> dict:
    """Point ``current`` at ``directory`` (a published index of this model)."""
    meta = read_metadata(directory)
    old = read_pointer(model_root(indexes, model_name) / CURRENT)
    doc = {
        "dir": directory.name,
        "model_version": meta["model_version"],
        "flipped_at": now.isoformat(),
        "previous": old["dir"] if old else None,
    }
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


def rollback(indexes: Path, model_name: str, now: dt.datetime) -> dict[str, Any]:
    """Flip ``current`` to the newest verified build older than the current one."""
    current = current_dir(indexes, model_name)
    if current is None:
        raise AnnError(f"no current index of {model_name!r} in {indexes}; nothing to roll back")
    builds = [p for p, _ in list_indexes(indexes, model_name)]
    older = builds[: builds.index(current)] if current in builds else []
    for candidate in reversed(older):
        try:
            verify_index(candidate)
        except AnnError:
            continue  # a damaged build is skipped, never served
        return flip_current(indexes, model_name, candidate, now)
    raise AnnError(
        f"cannot roll back {model_name!r}: no intact index older than {current.name} "
        f"(kept: {[p.name for p in builds]})"
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
    """Delete all but the newest ``keep`` builds; never one ``pinned_dirs`` names.
    Returns the deleted directory names."""
    if keep < 1:
        raise AnnError(f"keep must be >= 1, got {keep}")
    pinned = pinned_dirs(indexes, model_name)
    builds = [p for p, _ in list_indexes(indexes, model_name)]
    doomed = [p for p in builds[:-keep] if p.name not in pinned]
    for path in doomed:
        shutil.rmtree(path)
    return [p.name for p in doomed]
