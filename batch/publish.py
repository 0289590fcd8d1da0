"""`towerline publish`: make model version V servable, only when both halves of it exist.

A user embedding means something only against the index of the same version, computed
from that version's cached history state (DESIGN.md, "Versions"). ``publish`` checks, in
order, and refuses with a message naming what is missing:

1. an index of V in INDEXES whose ``index.bin`` matches its sha256, built from the item
   tower V has in the registry (same sha256); for a sharded build, the whole set: every
   shard present once, each verifying, all of V over one corpus snapshot
   (``towerline.core.ann.sets``), else one line says which shard is missing or what mixes;
2. ``user_history_state`` rows of V in the lake (``<lake>/user_history_state/dt=*/``,
   newest partition first), written by this model: the partition's ``_manifest.json``
   (``batch.encode_output``) must name the model and the registry's encoder of V (a
   partition from before manifests is taken for the default model only);
3. with a Feast store: the online store answers a sample of those users for
   ``model_version=V``.

Only then is ``<INDEXES>/<model_name>/serving.json`` replaced (``os.replace`` after fsync),
naming the version and its index directory; a refused publish leaves it untouched. Around
that replace the registry's ``pinned.json`` is rewritten (``model.registry.pin_versions``)
so registry pruning never deletes the served version or its previous one: first widened to
old and new, then narrowed to what ``serving.json`` names.

``previous`` is the way back to another version: the last build of a *different* version
served before. Publishing a new build of the version already served (the daily chain does it
every day) keeps ``previous`` as it was, so after a retrain replaced N by N+1 and N+1 has
been rebuilt for a few days, ``towerline rollback`` still returns to N, not to yesterday's
N+1. Rolling back re-publishes that build, and the version rolled back from becomes
``previous``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import feast
import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds

from batch.encode_output import read_manifest
from model.registry import RegistryError, pin_versions, resolve_version, verify_version
from schemas.arrow import USER_HISTORY_STATE
from schemas.lake import partition_dir, partitions
from towerline.core import contracts
from towerline.core.ann import (
    SERVING,
    AnnError,
    IndexSet,
    current_set,
    index_sets,
    model_root,
    read_pointer,
    verify_set,
)
from towerline.core.contracts import DEFAULT_MODEL_NAME
from towerline.core.errors import RefusedError
from towerline.core.featurestore import read_online
from towerline.core.files import write_json_atomic
from towerline.core.names import version_problem

HISTORY_VIEW = contracts.USER_HISTORY_STATE


class PublishError(RefusedError):
    """The version is not servable; the message names what is missing."""


def find_index(
    indexes: Path, model_name: str, version: str, only_dir: str | None = None
) -> tuple[IndexSet, list[dict[str, Any]]]:
    """The intact index of ``version`` to serve — a plain build, or every shard of a set —
    and its metadata by shard: ``current`` if it is one, else the newest (``only_dir``: the
    build or set holding that directory and no other, as a rollback asks)."""
    sets = [
        s
        for s in index_sets(indexes, model_name)
        if any(m["model_version"] == version for _, m in s.builds) and only_dir in (None, *s.dirs)
    ]
    if not sets:
        raise PublishError(
            f"{model_name} {version} has no index in {indexes}; build it first with "
            f"`towerline batch index --version {version}`"
        )
    current = current_set(indexes, model_name)
    candidates = [s for s in sets if current and s.key == current.key] + sets[::-1]
    problems: dict[str, str] = {}
    for unit in candidates:
        if unit.key in problems:
            continue
        try:
            return unit, verify_set(unit)
        except AnnError as exc:
            problems[unit.key] = str(exc)
    raise PublishError(
        f"{model_name} {version} has no intact index: {'; '.join(problems.values())}"
    )


def check_item_tower(
    meta: dict[str, Any], registry: Path, model_name: str, version: str
) -> dict[str, str]:
    """The index must come from the item tower the registry holds for ``version``.
    Returns the version's verified file -> sha256."""
    try:
        files = verify_version(registry, model_name, version)["files"]
    except RegistryError as exc:
        raise PublishError(f"cannot check the item tower of {version}: {exc}") from exc
    if files.get("item_tower.pt") != meta["sha256"].get("item_tower"):
        raise PublishError(
            f"index {meta['model_version']} ({meta['built_at']}) was built from another item "
            f"tower than {model_name} {version} in {registry}; rebuild the index"
        )
    return files


def offline_states(
    lake: Path,
    version: str,
    sample: int,
    model_name: str = DEFAULT_MODEL_NAME,
    encoder_sha256: str | None = None,
) -> dict[str, Any]:
    """Newest ``user_history_state`` partition holding rows of ``version``: {partition,
    rows, sample_users (up to ``sample`` ids spread over the partition)}. Refuses rows
    another model (or another encoder than ``encoder_sha256``) wrote."""
    for day in reversed(partitions(lake, HISTORY_VIEW)):
        # The whole dt= directory: the encode job nests one folder per version in it.
        states = ds.dataset(
            partition_dir(lake, HISTORY_VIEW, day), format="parquet", schema=USER_HISTORY_STATE
        )
        table = states.to_table(columns=["user_id"], filter=pc.field("model_version") == version)
        if table.num_rows:
            check_writer(
                partition_dir(lake, HISTORY_VIEW, day) / version, model_name, encoder_sha256
            )
            users = np.unique(table["user_id"].to_numpy())
            picks = np.unique(np.linspace(0, len(users) - 1, min(sample, len(users))).astype(int))
            return {
                "partition": day.isoformat(),
                "rows": table.num_rows,
                "sample_users": users[picks].tolist(),
            }
    raise PublishError(
        f"no {HISTORY_VIEW} rows for model_version {version!r} under {Path(lake) / HISTORY_VIEW}; "
        f"run the daily encode job with {version} first"
    )


def check_writer(states_dir: Path, model_name: str, encoder_sha256: str | None) -> None:
    """The states in ``states_dir`` (``dt=DATE/<version>``) must come from ``model_name``'s
    encoder: rows are keyed by version only, and v1 of two models are different models."""
    manifest = read_manifest(states_dir)
    rerun = f"re-run `towerline batch encode --model-name {model_name}` for that day"
    if manifest is None:
        if model_name != DEFAULT_MODEL_NAME:
            raise PublishError(
                f"{states_dir} does not record which model wrote it (no _manifest.json, "
                f"written before manifests); {rerun}"
            )
        return  # a partition from before manifests: taken as the default model's
    if manifest.get("model_name") != model_name:
        raise PublishError(
            f"the states in {states_dir} were written by model {manifest.get('model_name')!r}, "
            f"not {model_name!r}; {rerun}"
        )
    if encoder_sha256 and manifest.get("encoder_sha256") not in (None, encoder_sha256):
        raise PublishError(
            f"the states in {states_dir} were encoded by another encoder than {model_name} "
            f"{manifest.get('model_version')} in the registry; {rerun}"
        )


def online_states(store: feast.FeatureStore, version: str, users: list[int]) -> int:
    """How many of ``users`` the online store answers for ``version`` (all, or refuse)."""
    rows = [{"user_id": int(u), "model_version": version} for u in users]
    hidden = read_online(store, [f"{HISTORY_VIEW}:hidden"], rows)["hidden"]
    missing = [u for u, h in zip(users, hidden, strict=True) if h is None]
    if missing:
        raise PublishError(
            f"the online store has no {HISTORY_VIEW} of {version} for {len(missing)} of "
            f"{len(users)} sampled users (e.g. user_id {missing[:3]}); write it online first"
        )
    return len(users)


def publish(
    version: str,
    registry: Path,
    indexes: Path,
    lake: Path,
    store: feast.FeatureStore | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    sample: int = 16,
    now: dt.datetime | None = None,
    index_dir: str | None = None,
) -> dict[str, Any]:
    """Check ``version`` (or "latest") is servable, then point ``serving.json`` at it
    (at the build ``index_dir`` when given). Returns the pointer written; raises
    ``PublishError`` and writes nothing otherwise."""
    try:
        version = resolve_version(Path(registry), model_name, version)
    except RegistryError as exc:
        raise PublishError(str(exc)) from exc
    unit, metas = find_index(indexes, model_name, version, index_dir)
    meta = metas[0]  # a set's shards agree on version, tower and snapshot (verify_set)
    files = check_item_tower(meta, Path(registry), model_name, version)
    states = offline_states(Path(lake), version, sample, model_name, files.get("encoder.pt"))
    if store is not None:
        states["online_sampled"] = online_states(store, version, states["sample_users"])
    root = model_root(indexes, model_name)
    old = read_pointer(root / SERVING)
    previous = _previous_for(old, version)
    doc = {
        "model_name": model_name,
        "model_version": version,
        "dir": unit.dirs[0],
        "index_sha256": meta["sha256"]["index"],
        "corpus_snapshot": meta["corpus_snapshot"],
        **_shards(unit, metas),
        "published_at": (now or dt.datetime.now(dt.UTC)).isoformat(),
        "history_states": {k: v for k, v in states.items() if k != "sample_users"},
        "previous": previous,
    }
    before = {"serving": version, "previous": _version_of(old), "retiring": _previous_of(old)}
    pin_versions(Path(registry), model_name, before)  # pruning keeps old and new meanwhile
    write_json_atomic(root / SERVING, doc)
    pin_versions(
        Path(registry), model_name, {"serving": version, "previous": _version_of(previous)}
    )
    return doc


def rollback(
    registry: Path,
    indexes: Path,
    lake: Path,
    store: feast.FeatureStore | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Re-publish the build ``serving.json``'s ``previous`` names, with every check of
    ``publish``; the version rolled back from becomes the new ``previous``."""
    current = read_pointer(model_root(indexes, model_name) / SERVING)
    previous = (current or {}).get("previous")
    if not previous or not previous.get("model_version") or not previous.get("dir"):
        raise PublishError(
            f"nothing to roll back to: {model_root(indexes, model_name) / SERVING} names no "
            "previous version"
        )
    return publish(
        previous["model_version"],
        registry,
        indexes,
        lake,
        store,
        model_name,
        now=now,
        index_dir=previous["dir"],
    )


def _shards(unit: IndexSet, metas: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``serving.json`` adds for a set: its id and every shard's directory and sha256
    (serving loads and checks them all); nothing for a plain build."""
    if not unit.sharded:
        return {}
    shards = [
        {"dir": d, "index_sha256": m["sha256"]["index"]}
        for d, m in zip(unit.dirs, metas, strict=True)
    ]
    return {"set": unit.key, "shards": shards}


def _previous_for(old: dict[str, Any] | None, version: str) -> dict[str, Any] | None:
    """What the new ``serving.json`` names as previous: the old pointer when it serves
    another version; when it serves this one (the same build or a newer build of it) the old
    pointer's own previous, so previous always leads to another version, never to itself."""
    if old is None:
        return None
    if old.get("model_version") == version:
        return old.get("previous")
    return {k: old.get(k) for k in ("model_version", "dir", "published_at")}


def _version_of(pointer: dict[str, Any] | None) -> str | None:
    """The model version a ``serving.json`` (or its ``previous``) names, if it is one."""
    version = (pointer or {}).get("model_version")
    return version if version_problem(version) is None else None


def _previous_of(pointer: dict[str, Any] | None) -> str | None:
    previous = (pointer or {}).get("previous")
    return _version_of(previous) if isinstance(previous, dict) else None
