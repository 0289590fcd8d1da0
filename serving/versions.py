"""What a serving process serves: the index ``serving.json`` names, verified, with the
online tower and the learned empty state of that same model version.

A sharded build (``serving.json`` names a ``set`` and its ``shards``) is served whole: every
shard loads and verifies against the sha256 publish recorded, the set is complete and of
one version, and retrieval queries all shards and merges by score (``ShardedIndex``).

A ``Served`` is immutable: a request holds the one it started with, so a swap never changes
the version under a request in flight. Loading refuses (``ServingError``) anything that
does not verify, and the caller keeps serving what it had.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.artifacts import load_config, load_encoder, load_online
from model.config import ModelConfig
from model.registry import verify_version
from model.towers import OnlineTower
from towerline.core.ann import (
    SERVING,
    AnnError,
    HnswIndex,
    IndexSet,
    ShardedIndex,
    model_root,
    read_pointer,
    set_problems,
)
from towerline.core.ann.interests import INTERESTS_FILE, PinInterests
from towerline.core.contracts import INTEREST_SLOTS, PAD_INTEREST
from towerline.core.errors import RefusedError, TowerlineError
from towerline.core.files import sha256_file


class ServingError(RefusedError):
    """A published version cannot be served; the message says which check failed."""


@dataclasses.dataclass(frozen=True)
class Tower:
    """The online part of one version's user tower, in eval mode."""

    model_version: str
    cfg: ModelConfig
    online: OnlineTower
    empty_state: torch.Tensor  # (d_model,) the learned state of a user with no history
    traced: torch.jit.ScriptModule  # ``online`` traced and frozen: what serving runs


@dataclasses.dataclass(frozen=True)
class Served:
    """One verified index and the tower of its version."""

    model_name: str
    model_version: str
    index_dir: str
    built_at: str
    corpus_snapshot: str
    published_at: str
    index: HnswIndex | ShardedIndex
    tower: Tower
    pins: PinInterests | None  # None: an index built before pin interests were saved

    @property
    def key(self) -> tuple[str, str]:
        return self.model_version, self.index_dir

    @property
    def shards(self) -> int:
        """How many shards the index holds (1: one plain build)."""
        return len(self.index.shards) if isinstance(self.index, ShardedIndex) else 1


class TowerCache:
    """Online towers of the last ``keep`` versions used (loading one takes ~100 ms)."""

    def __init__(self, registry: Path, model_name: str, keep: int = 3) -> None:
        self.registry, self.model_name, self.keep = Path(registry), model_name, keep
        self._towers: collections.OrderedDict[str, Tower] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str) -> Tower:
        with self._lock:
            if version in self._towers:
                self._towers.move_to_end(version)
                return self._towers[version]
        tower = self._load(version)
        with self._lock:
            self._towers[version] = tower
            while len(self._towers) > self.keep:
                self._towers.popitem(last=False)
        return tower

    def versions(self) -> list[str]:
        with self._lock:
            return list(self._towers)

    def _load(self, version: str) -> Tower:
        _, cfg = load_config(self.registry, version, self.model_name)
        online = load_online(self.registry, version, self.model_name)
        empty = load_encoder(self.registry, version, self.model_name).empty.detach().clone()
        return Tower(version, cfg, online, empty, trace_online(online, cfg))


def trace_online(online: OnlineTower, cfg: ModelConfig) -> torch.jit.ScriptModule:
    """``online`` as a traced, frozen graph: the same ops and weights, without eager
    PyTorch's per-op Python dispatch (~35 small ops: 0.23 -> 0.10 ms a forward here).

    TorchScript is deprecated in favour of torch.compile, whose compile time and runtime
    dependencies a serving process does not want; torch is pinned, so it stays."""
    b, n = 2, cfg.realtime_len
    example = (
        torch.zeros(b, cfg.d_model),
        torch.full((b, INTEREST_SLOTS), PAD_INTEREST, dtype=torch.int64),
        torch.zeros(b, INTEREST_SLOTS),
        torch.zeros(b, 4, dtype=torch.int64),
        torch.zeros(b, n, dtype=torch.int64),
        torch.zeros(b, n, dtype=torch.bool),
        torch.full((b,), -1, dtype=torch.int64),
    )
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.freeze(torch.jit.trace(online.eval(), example))


def read_serving(indexes: Path, model_name: str) -> dict[str, Any] | None:
    """The ``serving.json`` document, or None when nothing was published yet."""
    return read_pointer(model_root(indexes, model_name) / SERVING)


def load_served(
    indexes: Path, registry: Path, model_name: str, pointer: dict[str, Any], towers: TowerCache
) -> Served:
    """Verify and load what ``pointer`` (a ``serving.json``) names; ``ServingError`` if not."""
    version, dir_name = pointer.get("model_version"), pointer.get("dir")
    if pointer.get("model_name") != model_name or not version or not dir_name:
        raise ServingError(f"serving.json does not name a {model_name!r} index: {pointer}")
    root = model_root(indexes, model_name)
    named = _named_shards(pointer)
    loaded = [_load_index(root / d, sha256, version) for d, sha256 in named]
    builds = [(root / d, index.metadata) for (d, _), index in zip(named, loaded, strict=True)]
    if pointer.get("shards"):
        _check_set(str(pointer.get("set")), builds)
    files = _registry_files(registry, model_name, version)
    for directory, meta in builds:
        _check(files.get("item_tower.pt") == meta["sha256"].get("item_tower"), f"{directory} was built from another item tower than {model_name} {version}")  # fmt: skip
    meta = loaded[0].metadata
    return Served(
        model_name=model_name,
        model_version=version,
        index_dir=str(dir_name),
        built_at=str(meta.get("built_at")),
        corpus_snapshot=str(meta.get("corpus_snapshot")),
        published_at=str(pointer.get("published_at")),
        index=ShardedIndex(loaded, meta) if pointer.get("shards") else loaded[0],
        tower=towers.get(version),
        pins=_merged_pins(builds),
    )


def _named_shards(pointer: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(directory, index sha256) of every build ``pointer`` names: a set's shards in
    order, else its one ``dir``."""
    shards = pointer.get("shards")
    if not shards:
        return [(str(pointer["dir"]), pointer.get("index_sha256"))]
    _check(isinstance(shards, list) and all(isinstance(s, dict) for s in shards), f"serving.json's shards are not a list of {{dir, index_sha256}}: {shards}")  # fmt: skip
    named = [(str(s.get("dir")), s.get("index_sha256")) for s in shards]
    _check(named[0][0] == pointer["dir"], f"serving.json names {pointer['dir']}, its first shard {named[0][0]}")  # fmt: skip
    return named


def _load_index(directory: Path, sha256: str | None, version: str) -> HnswIndex:
    """One build serving.json names: verified, of ``version``, the file publish checked."""
    try:
        index = HnswIndex.load(directory, verify=True)
    except (AnnError, OSError, ValueError, RuntimeError) as exc:
        raise ServingError(f"index {directory} does not load: {exc}") from None
    meta = index.metadata
    _check(meta.get("model_version") == version, f"{directory} holds {meta.get('model_version')}, not {version}")  # fmt: skip
    _check(meta["sha256"].get("index") == sha256, f"{directory}/index.bin is not the file serving.json published")  # fmt: skip
    return index


def _check_set(set_key: str, builds: list[tuple[Path, dict[str, Any]]]) -> None:
    """The shards serving.json names must be the whole set it names, of one version."""
    unit = IndexSet(set_key, tuple(builds))
    problems = set_problems(unit)
    _check(not problems, "; ".join(problems))
    _check(len(builds) == unit.count, f"serving.json names {len(builds)} shards of index set {set_key}, which has {unit.count}")  # fmt: skip


def _registry_files(registry: Path, model_name: str, version: str) -> dict[str, str]:
    try:
        return verify_version(Path(registry), model_name, version)["files"]
    except (TowerlineError, OSError, ValueError) as exc:
        raise ServingError(f"{model_name} {version} does not verify in {registry}: {exc}") from None


def _merged_pins(builds: list[tuple[Path, dict[str, Any]]]) -> PinInterests | None:
    """The pin interests of every shard as one lookup (None if any shard has none)."""
    parts = [_pins(directory, meta) for directory, meta in builds]
    if len(parts) == 1:
        return parts[0]
    if any(p is None for p in parts):
        return None
    ids = np.concatenate([p.pin_id for p in parts])
    return PinInterests.build(ids, np.concatenate([p.interest_ids for p in parts]))


def _pins(directory: Path, meta: dict[str, Any]) -> PinInterests | None:
    expected = meta["sha256"].get("pin_interests")
    if expected is None:
        return None
    path = directory / INTERESTS_FILE
    _check(path.is_file() and sha256_file(path) == expected, f"{path} does not match its sha256")
    return PinInterests.load(directory)


def _check(ok: bool, problem: str) -> None:
    if not ok:
        raise ServingError(problem)
