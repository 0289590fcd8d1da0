"""The model registry: ``REGISTRY/<model_name>/<version>/`` directories.

A version holds one ``<part>.pt`` state dict per model part, JSON documents
(``config.json``, ``window.json``, ``metrics.json``) and ``manifest.json`` with the
sha256 of every other file. A version appears atomically (written under a temporary
name, then renamed), ``versions.json`` lists the kept versions, and only the last
``keep`` survive, plus any version ``pinned.json`` names. Loading verifies every sha256
first and reads weights with ``weights_only=True``, so a tampered or truncated file fails
loudly, never silently.

``pinned.json`` (``{"model_name", "pinned": {role: version}, "updated_at"}``) is written
by ``towerline publish``: the version ``serving.json`` names and its previous one. The
registry does not read the index store, so this file is how it knows what is live;
pruning never deletes a pinned version, whatever ``keep`` says.

``rejected.json`` beside a version's files (outside its manifest) marks a candidate that
failed ``towerline retrain``'s validation gate, with the reason. "latest" never resolves to
a rejected version, so encode, index and publish never pick one by default (naming it
explicitly still works), and pruning deletes rejected candidates before any other.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from towerline.core.errors import EXIT_FAILED, InputError
from towerline.core.files import sha256_file, write_json_atomic
from towerline.core.names import check_name, check_version

MANIFEST = "manifest.json"
VERSIONS = "versions.json"
PINNED = "pinned.json"
REJECTED = "rejected.json"
_VERSION = re.compile(r"^v(\d+)$")


class RegistryError(InputError):
    """The registry does not hold what was asked for."""


class IntegrityError(RegistryError):
    """A version's files do not match their recorded sha256."""

    exit_code = EXIT_FAILED


def model_dir(registry: Path, model_name: str) -> Path:
    """``REGISTRY/<model_name>``; a name that is not a plain name (``../x``) is refused, so
    no caller can write or prune outside the registry."""
    return Path(registry) / check_name(model_name)


def version_dir(registry: Path, model_name: str, version: str) -> Path:
    """``REGISTRY/<model_name>/<version>`` for a version name ``v1``, ``v2``, …"""
    return model_dir(registry, model_name) / check_version(version)


def list_versions(registry: Path, model_name: str) -> list[str]:
    """Complete versions of ``model_name``, oldest first (v1, v2, ..., v10)."""
    root = model_dir(registry, model_name)
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if _VERSION.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda name: int(name[1:]))


def resolve_version(registry: Path, model_name: str, version: str | None) -> str:
    """``version`` itself, or the newest one not rejected for None / "latest"."""
    versions = list_versions(registry, model_name)
    if version in (None, "latest"):
        rejected = set(rejected_versions(registry, model_name))
        accepted = [v for v in versions if v not in rejected]
        if rejected and not accepted:
            raise RegistryError(
                f"every version of {model_name!r} in {registry} was rejected by the retrain "
                f"gate ({', '.join(sorted(rejected))}); name one with --version to use it anyway"
            )
        if not accepted:
            raise RegistryError(f"no versions of {model_name!r} in {registry}")
        return accepted[-1]
    if version not in versions:
        raise RegistryError(f"{model_name!r} has no version {version!r}; kept: {versions}")
    return version


def save_version(
    registry: Path,
    model_name: str,
    weights: dict[str, dict[str, torch.Tensor]],
    documents: dict[str, dict[str, Any]],
    keep: int = 3,
    now: dt.datetime | None = None,
) -> str:
    """Write a new version (``weights``: part -> state dict, ``documents``: name -> JSON)
    and prune to the last ``keep``. Returns the version name (v1, v2, ...)."""
    root = model_dir(registry, model_name)
    root.mkdir(parents=True, exist_ok=True)
    created = (now or dt.datetime.now(dt.UTC)).isoformat()
    staging = root / f".staging-{os.getpid()}-{id(weights)}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for part, state in weights.items():
        torch.save({k: v.detach().cpu() for k, v in state.items()}, staging / f"{part}.pt")
    for name, doc in documents.items():
        (staging / f"{name}.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
    files = {p.name: sha256_file(p) for p in sorted(staging.iterdir())}
    version = _publish(root, staging, files, created)
    _write_listing(registry, model_name)
    prune(registry, model_name, keep)
    return version


def _publish(root: Path, staging: Path, files: dict[str, str], created: str) -> str:
    """Rename the staging dir to the next free version name (another writer may race)."""
    while True:
        taken = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION.match(p.name))]
        version = f"v{max(taken, default=0) + 1}"
        manifest = {"version": version, "created_at": created, "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        try:
            os.rename(staging, root / version)
            return version
        except OSError:
            if not (root / version).exists():
                raise


def _write_listing(registry: Path, model_name: str) -> None:
    """``versions.json``: the kept versions with creation time (written atomically)."""
    root = model_dir(registry, model_name)
    rows = []
    for version in list_versions(registry, model_name):
        manifest = json.loads((root / version / MANIFEST).read_text())
        rows.append({"version": version, "created_at": manifest.get("created_at")})
    write_json_atomic(root / VERSIONS, {"model_name": model_name, "versions": rows})


def pinned_versions(registry: Path, model_name: str) -> dict[str, str]:
    """role -> version of what ``pinned.json`` protects ({} when there is none)."""
    path = model_dir(registry, model_name) / PINNED
    if not path.is_file():
        return {}
    try:
        pinned = json.loads(path.read_text())["pinned"]
    except (ValueError, KeyError, TypeError) as exc:
        # Pruning on a guess could delete the live version: refuse until it is repaired.
        raise RegistryError(
            f"{path} is not a pin list ({exc}); re-run `towerline publish` to rewrite it"
        ) from exc
    return {role: v for role, v in pinned.items() if isinstance(v, str)}


def pin_versions(
    registry: Path, model_name: str, pinned: dict[str, str | None], now: dt.datetime | None = None
) -> dict[str, str]:
    """Replace ``pinned.json`` with ``pinned`` (role -> version; None entries dropped)."""
    roles = {role: check_version(v, f"pinned {role} version") for role, v in pinned.items() if v}
    doc = {
        "model_name": model_name,
        "pinned": roles,
        "updated_at": (now or dt.datetime.now(dt.UTC)).isoformat(),
    }
    root = model_dir(registry, model_name)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / PINNED, doc)
    return roles


def mark_rejected(registry: Path, model_name: str, version: str, reason: dict[str, Any]) -> Path:
    """Mark ``version`` as a candidate the validation gate rejected; ``reason`` (JSON) is
    kept in ``rejected.json`` beside its files."""
    verify_version(registry, model_name, version)
    path = version_dir(registry, model_name, version) / REJECTED
    write_json_atomic(path, {"model_name": model_name, "version": version, **reason})
    return path


def rejected_versions(registry: Path, model_name: str) -> list[str]:
    """Complete versions marked rejected, oldest first."""
    root = model_dir(registry, model_name)
    return [v for v in list_versions(registry, model_name) if (root / v / REJECTED).is_file()]


def prune(registry: Path, model_name: str, keep: int) -> list[str]:
    """Delete versions until ``keep`` remain: rejected candidates first, then the oldest;
    never a pinned one (see the module docstring) nor the newest (just saved, not yet
    judged). Returns the deleted ones."""
    if keep < 1:
        raise RegistryError(f"keep must be >= 1, got {keep}")
    versions = list_versions(registry, model_name)
    pinned = set(pinned_versions(registry, model_name).values())
    rejected = set(rejected_versions(registry, model_name))
    deletable = [v for v in versions[:-1] if v not in pinned]
    order = [v for v in deletable if v in rejected] + [v for v in deletable if v not in rejected]
    doomed = sorted(order[: max(len(versions) - keep, 0)], key=lambda v: int(v[1:]))
    for version in doomed:
        shutil.rmtree(version_dir(registry, model_name, version))
    if doomed:
        _write_listing(registry, model_name)
    return doomed


def verify_version(registry: Path, model_name: str, version: str) -> dict[str, Any]:
    """Check every file against the manifest; returns the manifest."""
    root = version_dir(registry, model_name, version)
    if not (root / MANIFEST).is_file():
        raise RegistryError(f"{root} is not a model version (no {MANIFEST})")
    manifest = json.loads((root / MANIFEST).read_text())
    for name, expected in manifest["files"].items():
        path = root / name
        if not path.is_file():
            raise IntegrityError(f"{model_name} {version}: {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"{model_name} {version}: {name} does not match its sha256 "
                f"(manifest {expected[:12]}…, file {actual[:12]}…); refusing to load a "
                "modified or corrupted model"
            )
    return manifest


def load_weights(registry: Path, model_name: str, version: str, part: str) -> dict[str, Any]:
    """The verified state dict of ``part``, loaded with ``weights_only=True``."""
    verify_version(registry, model_name, version)
    path = version_dir(registry, model_name, version) / f"{part}.pt"
    if not path.is_file():
        raise RegistryError(f"{model_name} {version} has no part {part!r}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_document(registry: Path, model_name: str, version: str, name: str) -> dict[str, Any]:
    """A verified JSON document (config, window, metrics) of a version."""
    verify_version(registry, model_name, version)
    path = version_dir(registry, model_name, version) / f"{name}.json"
    if not path.is_file():
        raise RegistryError(f"{model_name} {version} has no document {name!r}")
    return json.loads(path.read_text())
