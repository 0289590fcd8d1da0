"""Atomic, durable file writes: the one way towerline replaces a file or a directory.

A reader sees the old content or the new, never half: data goes to a temporary sibling,
is fsynced, renamed over the target, and the directory entry is fsynced too, so a crash
or power loss right after the call cannot leave an empty or truncated file behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from towerline.core.errors import RefusedError


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so the names renamed into it survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """fsync every file under ``directory`` and the directory itself (before a rename, so
    a crash never leaves a published name pointing at unwritten blocks)."""
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(directory)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, doc: Any) -> None:
    """Replace ``path`` with ``doc`` as indented, key-sorted JSON, atomically and durably."""
    write_text_atomic(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (model weights and indexes are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish_dir(staging: Path, parent: Path, name: str) -> Path:
    """fsync ``staging`` and rename it to ``parent/name`` (``name-2``, … if taken)."""
    fsync_tree(staging)
    for attempt in range(1, 100):
        final = parent / (name if attempt == 1 else f"{name}-{attempt}")
        if final.exists():
            continue
        os.rename(staging, final)  # atomic on one filesystem; fails if a racer took it
        fsync_dir(parent)
        return final
    raise RefusedError(f"no free directory name for {name} in {parent}")


def append_line(path: Path, line: bytes) -> None:
    """Append one line to a log file (the run ledger, the freshness history): atomic
    against other writers (``O_APPEND`` under an exclusive ``flock``), durable on return
    (fsync). A writer that died mid-line left a torn fragment: it is ended first, so the
    new line stands alone and readers skip only the fragment. Raises ``OSError``."""
    if not line.endswith(b"\n"):
        line += b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # read: the tail check
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
        while line:  # one write in practice; the lock keeps a short write whole anyway
            line = line[os.write(fd, line) :]
        os.fsync(fd)
    finally:
        os.close(fd)
