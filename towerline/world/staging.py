"""Write a directory tree under a staging name and rename it onto its final name when done.

``generate`` takes minutes on a large world; a reader (``batch corpus``, ``train``) must
never find half of one at ``--out``. The staging directory is a hidden sibling of the
target (same filesystem, so the final ``rename`` is atomic) and is removed on any error,
Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from towerline.core.errors import InputError, RefusedError
from towerline.core.files import fsync_dir, fsync_tree

STAGING_MARK = ".staging-"


class OutNotEmptyError(InputError):
    """The target directory already holds something: a world is never written over data."""


def check_out(out: Path) -> None:
    """Refuse a target that exists and is not an empty directory."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutNotEmptyError(
            f"{out} exists and is not an empty directory; give a new or empty directory "
            "(a world is never written over existing data)"
        )


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a fresh staging sibling of ``out``; on success rename it onto ``out``.

    ``out`` must be absent or an empty directory (``rename`` replaces an empty directory
    atomically and fails on a non-empty one, so a racer's files are never overwritten).
    On any exception the staging directory is deleted and ``out`` is left as it was.
    """
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}{STAGING_MARK}{uuid.uuid4().hex[:12]}")
    staging.mkdir()
    try:
        yield staging
        fsync_tree(staging)  # a crash after the rename must not publish unwritten blocks
        try:
            os.rename(staging, out)
        except OSError as exc:  # ENOTEMPTY/EEXIST: someone wrote into out meanwhile
            raise RefusedError(
                f"{out} was filled by someone else while the world was generated; "
                f"nothing was written there ({exc.strerror})"
            ) from exc
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
