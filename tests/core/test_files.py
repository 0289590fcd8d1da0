"""Atomic, durable writes: a reader sees the old content or the new, never half."""

import json
import os
from pathlib import Path

import pytest

from towerline.core import files


def test_json_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "pointer.json"
    files.write_json_atomic(target, {"dir": "v1"})
    files.write_json_atomic(target, {"dir": "v2"})
    assert json.loads(target.read_text()) == {"dir": "v2"}
    assert [p.name for p in tmp_path.iterdir()] == ["pointer.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "state.txt"
    files.write_text_atomic(target, "old")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        files.write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.txt"]


def test_publish_dir_never_overwrites(tmp_path: Path) -> None:
    for _ in range(2):
        staging = tmp_path / f".staging-{_}"
        staging.mkdir()
        (staging / "a").write_text("x")
        files.publish_dir(staging, tmp_path, "build")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "build-2"]


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert files.sha256_file(path).startswith("ba7816bf")
