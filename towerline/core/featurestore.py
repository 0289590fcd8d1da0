"""Open the towerline Feast store, apply its declarations and write to its online store.

The feature repository (``feature_repo/``) holds the declarations and the default
``feature_store.yaml``; this module builds the ``RepoConfig`` from that yaml with the
overrides callers need (online store kind, Redis address, project, a private data dir),
so tests and demos never touch the checkout and parallel runs on one Redis never collide:
Feast ends every Redis key with the project name.

Nothing here reads the environment: the entry points (``towerline.cli.options``) resolve
``TOWERLINE_ONLINE_STORE``, ``TOWERLINE_REDIS_URL`` and ``TOWERLINE_FEAST_PROJECT`` and pass
the values in.
"""

import functools
import importlib.util
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import feast
import pandas as pd
import pyarrow as pa
import yaml
from feast.errors import FeastObjectNotFoundException
from pydantic import ValidationError

from towerline.core.errors import InputError, UnavailableError

REPO_DIR = Path(__file__).resolve().parents[2] / "feature_repo"
ONLINE_STORES = ("sqlite", "redis")
DEFAULT_REDIS_URL = "127.0.0.1:6379"


class FeatureStoreError(InputError):
    """The feature store cannot do what was asked (bad setting, missing repository or view)."""


def open_store(
    repo_dir: Path = REPO_DIR,
    *,
    online: str | None = None,
    redis_url: str | None = None,
    project: str | None = None,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> feast.FeatureStore:
    """Open the Feast store of ``repo_dir`` with its ``feature_store.yaml`` plus overrides.

    Args:
        repo_dir: the feature repository (declarations and ``feature_store.yaml``).
        online: ``"sqlite"`` or ``"redis"``; default the yaml's (SQLite at
            ``feature_repo/data/online.db``).
        redis_url: ``host:port``, a Feast connection string (``host:port,db=1,password=…``)
            or ``redis://[user:password@]host:port[/db]``; default the yaml's, else
            ``127.0.0.1:6379``. Used only with the Redis store.
        project: Feast project; default the yaml's (``towerline``). Redis keys end with it,
            so distinct projects do not collide.
        data_dir: where the registry (``registry.db``) and the SQLite store (``online.db``)
            live instead of ``feature_repo/data``; created if missing.
        environ: expands ``${VAR}`` in the yaml as Feast's own loader does; the entry point
            passes its environment, library callers usually none.

    Nothing is connected until the store is used.
    """
    repo_dir = Path(repo_dir).resolve()
    raw = _read_yaml(repo_dir / "feature_store.yaml", environ or {})
    raw["project"] = project or raw["project"]
    if data_dir is not None:
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        raw["registry"] = str(data_dir / "registry.db")
    online = online or _yaml_online_type(raw)
    raw["online_store"] = _online_config(raw, online, redis_url, repo_dir, data_dir)
    try:
        config = feast.RepoConfig(**raw)
    except ValidationError as exc:
        raise FeatureStoreError(f"invalid feature store settings: {exc}") from exc
    config.repo_path = repo_dir
    return feast.FeatureStore(repo_path=str(repo_dir), config=config)


def _read_yaml(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    if not path.is_file():
        raise FeatureStoreError(f"no {path.name} in {path.parent}; is it a feature repository?")
    # Same substitution as Feast's own loader: ${VAR} is expanded when VAR is set.
    text = re.sub(r"\$\{(\w+)\}", lambda m: environ.get(m.group(1), m.group(0)), path.read_text())
    return yaml.safe_load(text)


def _yaml_online_type(raw: dict[str, Any]) -> str:
    section = raw.get("online_store") or "sqlite"
    return section if isinstance(section, str) else section.get("type", "sqlite")


def _online_config(
    raw: dict[str, Any], online: str, redis_url: str | None, repo_dir: Path, data_dir: Path | None
) -> dict[str, Any]:
    kind = online.strip().lower()
    if kind not in ONLINE_STORES:
        raise FeatureStoreError(f"unknown online store {online!r}; expected one of {ONLINE_STORES}")
    yaml_section = raw.get("online_store")
    base = dict(yaml_section) if isinstance(yaml_section, dict) else {}
    if base.get("type") != kind:
        base = {"type": kind}  # the yaml's settings belong to the other store
    if kind == "redis":
        url = redis_url or base.get("connection_string")
        return {**base, "connection_string": redis_connection_string(url or DEFAULT_REDIS_URL)}
    if data_dir is not None:
        return {**base, "path": str(data_dir / "online.db")}
    path = repo_dir / base.get("path", "data/online.db")
    path.parent.mkdir(parents=True, exist_ok=True)  # sqlite3 does not create directories
    return {**base, "path": str(path)}


def redis_connection_string(url: str) -> str:
    """Feast's ``host:port[,key=value…]`` from ``host:port`` or a ``redis://`` URL."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise FeatureStoreError(f"cannot read Redis URL {url!r}; use host:port or redis://…")
    options = [f"{parts.hostname}:{parts.port or 6379}"]
    if parts.path.strip("/"):
        options.append(f"db={parts.path.strip('/')}")
    if parts.username:
        options.append(f"username={parts.username}")
    if parts.password:
        options.append(f"password={parts.password}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
    return ",".join(options)


@functools.cache
def _declarations(path: Path) -> ModuleType:
    # feature_repo/ is not a package (Feast imports its files as top-level modules), so the
    # file is loaded by path under a private name that cannot shadow anything.
    if not path.is_file():
        raise FeatureStoreError(f"no declarations at {path}")
    spec = importlib.util.spec_from_file_location(f"_towerline_repo_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply_repo(store: feast.FeatureStore, lake: Path | str | None = None) -> list[str]:
    """Register every declared object in ``store`` (like ``feast apply``); create online tables.

    ``lake`` is where the offline (FileSource) paths point; default ``<repo>/data/lake``. Online reads and writes do not use it.
    Objects removed from the declarations are not deleted (``feast apply`` does that).
    Returns the names of the feature views applied.
    """
    check_online(store)
    module = _declarations(Path(store.repo_path).resolve() / "declarations.py")
    repo = module.REPO if lake is None else module.declare(str(Path(lake).resolve()))
    store.apply(repo.objects())
    return [view.name for view in repo.feature_views()]


def write_online(
    store: feast.FeatureStore,
    view_name: str,
    data: pa.Table | pd.DataFrame,
    batch_size: int = 10_000,
    on_batch: Callable[[int], object] | None = None,
) -> int:
    """Write rows to the online store of ``view_name`` in batches; return rows written.

    ``data`` holds the view's join keys, its features and its source's timestamp column
    (``updated_ts`` for the profiles, ``event_timestamp`` otherwise); other columns are
    ignored. One Feast call per batch: row-by-row writes run ~50x slower. ``on_batch``
    is called with the size of each batch once it is written.

    Returns the rows handed to Feast. Redis keeps the newest event time per entity and view:
    a row whose timestamp is not newer than the stored one (or than an earlier row of the
    same batch) is skipped silently; SQLite always overwrites. Writers should send one row
    per entity per batch, with increasing timestamps.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    try:
        store.get_feature_view(view_name)
    except FeastObjectNotFoundException as exc:
        raise FeatureStoreError(
            f"no feature view {view_name!r} in project {store.project!r}; run apply_repo first"
        ) from exc
    written = 0
    for batch in _batches(data, batch_size):
        store.write_to_online_store(view_name, df=batch)
        written += len(batch)
        if on_batch is not None:
            on_batch(len(batch))
    return written


def _batches(data: pa.Table | pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    # Arrow is converted per batch so a million-row table never doubles in memory.
    for start in range(0, len(data), size):
        if isinstance(data, pa.Table):
            yield data.slice(start, size).to_pandas()
        else:
            yield data.iloc[start : start + size]


def read_online(
    store: feast.FeatureStore, features: list[str], entity_rows: list[dict[str, Any]]
) -> dict[str, list[Any]]:
    """``get_online_features(...).to_dict()``: column name -> one value per entity row.

    ``features`` are ``"view:feature"`` references; missing entities read as ``None``.
    """
    return store.get_online_features(features=features, entity_rows=entity_rows).to_dict()


def record_tag(store: feast.FeatureStore, view_name: str, key: str, value: str) -> bool:
    """Set ``tags[key] = value`` on a registered view (a fact its writer owns, e.g. the
    half-life of pin_engagement); True when the registry changed."""
    try:
        view = store.get_feature_view(view_name)
    except FeastObjectNotFoundException:
        raise FeatureStoreError(
            f"no feature view {view_name!r} in project {store.project!r}; "
            "run `towerline features apply` first"
        ) from None
    if view.tags.get(key) == value:
        return False
    view.tags[key] = value
    store.apply([view])
    return True


def check_online(store: feast.FeatureStore, timeout_s: float = 2.0) -> None:
    """Fail fast, naming the address, when the online store cannot be reached.

    Feast connects lazily and its Redis client retries for a long time, so a wrong
    ``--redis-url`` would otherwise surface as a hang or a traceback far from its cause.
    """
    online = store.config.online_store
    if online.type != "redis":
        return
    import redis

    host_port, *options = online.connection_string.split(",")
    host, _, port = host_port.rpartition(":")
    kwargs = dict(option.split("=", 1) for option in options if "=" in option)
    client = redis.Redis(
        host=host or "127.0.0.1",
        port=int(port or 6379),
        db=int(kwargs.get("db", 0)),
        password=kwargs.get("password"),
        username=kwargs.get("username"),
        ssl=kwargs.get("ssl", "false").lower() == "true",
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
    )
    try:
        client.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise UnavailableError(
            f"cannot reach the Redis online store at {host_port}: {str(exc).rstrip('.')}. "
            "Is Redis running there? Check --redis-url / TOWERLINE_REDIS_URL."
        ) from None
    finally:
        client.close()
