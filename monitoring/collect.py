"""One collection: read every configured source, turn it into measures, judge the SLOs.

``collect(sources, clock)`` never raises for a source it cannot reach: the source goes to
``Snapshot.unreachable`` by name (``redis 127.0.0.1:6390``, ``kafka host:9092``,
``serving host:port``) and its measures are left out, so callers decide what an
incomplete picture means (``towerline freshness check`` exits 2 on it).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from feast.errors import FeastError

from monitoring import slo as slos_mod
from monitoring.model import PIPELINE_FRESHNESS_P50, PIPELINE_FRESHNESS_P99, Measure, Snapshot
from monitoring.sources import batch, hosts, index, online, rows, stream
from towerline.core import ledger
from towerline.core.contracts import (
    BATCH_VIEWS,
    DEFAULT_MODEL_NAME,
    PIN_ENGAGEMENT,
    STREAM_VIEWS,
    USER_REALTIME_SEQ,
)
from towerline.core.errors import EXIT_USAGE, TowerlineError, UnavailableError

if TYPE_CHECKING:
    import feast

log = logging.getLogger(__name__)


class CannotMeasureError(TowerlineError):
    """A source could not be reached, so the SLOs cannot all be judged (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Sources:
    """Where the monitor looks; any source left as None is not measured (and says so)."""

    ledger: Path | None = None
    lake: Path | None = None
    registry: Path | None = None
    indexes: Path | None = None
    model_name: str = DEFAULT_MODEL_NAME
    store: feast.FeatureStore | None = None
    bootstrap: str | None = None
    topic: str = "engagements"
    group: str | None = None  # the stream workers' consumer group: the lag measures' job
    state_namespace: str = "towerline:streams"
    serving_hosts: tuple[str, ...] = ()
    stream_metrics: tuple[str, ...] = ()  # stream workers' /metrics (host:port)
    slos: Path | None = None  # None: monitoring/slos.yml
    sample: int = 1000
    timeout_s: float = 3.0
    scan_count: int = 5000  # keys per Redis SCAN page while sampling


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class _Found:
    measures: list[Measure] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ages: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def lost(self, name: str, exc: BaseException) -> None:
        self.unreachable.append(name)
        self.notes.append(" ".join(str(exc).split()) or type(exc).__name__)


def collect(src: Sources, clock: Callable[[], dt.datetime] = utc_now) -> Snapshot:
    """Everything ``src`` can tell now, with the SLOs judged."""
    now = clock()
    now_ms = int(now.timestamp() * 1000)
    found = _Found()
    _batch(src, now, found)
    served = _index(src, now, found)
    if src.lake is not None:
        found.measures.append(batch.latest_partition_measure(src.lake, served))
    reachable = _online(src, now_ms, served, found) if src.store is not None else False
    if src.store is None:
        found.notes.append("no online store given: row ages, stream lag and coverage not measured")
    _workers(src, found)
    _hosts(src, found)
    targets = _view_targets(src.store if reachable else None, found)
    results = slos_mod.judge(slos_mod.load_slos(src.slos, targets), found.measures)
    return Snapshot(
        taken_at=now,
        measures=tuple(found.measures),
        slos=results,
        unreachable=tuple(dict.fromkeys(found.unreachable)),
        notes=tuple(dict.fromkeys(found.notes)),
        ages=found.ages,
    )


def _batch(src: Sources, now: dt.datetime, found: _Found) -> None:
    if src.ledger is None:
        found.notes.append("no run ledger given: batch run ages not measured")
        return
    try:
        records = ledger.read(src.ledger)
    except ledger.LedgerError as exc:
        found.lost(f"ledger {src.ledger}", exc)
        return
    found.measures.extend(batch.run_age_measures(records, now))


def _index(src: Sources, now: dt.datetime, found: _Found) -> str | None:
    if src.indexes is None:
        found.notes.append("no --indexes given: index age and versions not measured")
        return None
    measures, served = index.index_measures(src.indexes, src.model_name, now, src.registry, src.lake)  # fmt: skip
    found.measures.extend(measures)
    return served


def _online(src: Sources, now_ms: int, served: str | None, found: _Found) -> bool:
    """Rows, coverage and stream progress; False when the store does not answer."""
    from towerline.core.featurestore import check_online

    store = src.store
    assert store is not None
    name = online.store_name(store)
    try:
        check_online(store, timeout_s=src.timeout_s)
        users = _rows(src, store, now_ms, served, found)
        _coverage(src, store, served, users, found)
        _stream(src, store, now_ms, found)
    except UnavailableError as exc:
        found.lost(name, exc)
        return False
    return True


def _rows(src: Sources, store: feast.FeatureStore, now_ms: int, served: str | None, found: _Found) -> list[int]:  # fmt: skip
    active: list[int] = []
    for view in (*BATCH_VIEWS, *STREAM_VIEWS):
        try:
            sampled, users = online.read_rows(store, view, src.sample, served, src.scan_count)
        except UnavailableError:
            raise
        except TowerlineError as exc:  # e.g. the view is not applied in this project
            found.notes.append(f"{view}: {exc}")
            continue
        found.ages[view] = rows.ages_s(sampled, now_ms)
        found.measures.extend(rows.row_age_measures(sampled, now_ms))
        if view == USER_REALTIME_SEQ:
            active = users
            found.measures.extend(rows.pipeline_freshness_measures(sampled))
        if view in STREAM_VIEWS:
            found.measures.append(rows.data_age_from_rows(sampled, now_ms))
    return active


def _coverage(src: Sources, store: feast.FeatureStore, served: str | None, active: list[int], found: _Found) -> None:  # fmt: skip
    if served is None:
        return
    source, population = "user_realtime_seq online rows", None
    users = active[: src.sample]
    if not users and src.lake is not None:
        users, population = online.lake_users(src.lake, src.sample)
        source = "the lake's users table"
    found.measures.append(batch.coverage_measure(online.states_found(store, users, served) if users else 0, len(users), population, source))  # fmt: skip


def _stream(src: Sources, store: feast.FeatureStore, now_ms: int, found: _Found) -> None:
    job = src.group or "streams"
    try:
        progress = online.read_progress(store, src.state_namespace, src.topic)
    except ImportError:  # the stream progress reader is not installed
        found.notes.append("stream progress not readable: lag not measured")
        return
    ends = None
    if src.bootstrap:
        try:
            ends = online.end_offsets(src.bootstrap, src.topic, src.timeout_s)
        except UnavailableError as exc:
            found.lost(f"kafka {src.bootstrap}", exc)
    else:
        found.notes.append("no Kafka bootstrap servers: lag by offsets not measured")
    found.measures.extend(stream.lag_measures(progress, ends, now_ms, job=job))
    exact = stream.data_age_from_progress(progress, now_ms, job=job)
    if any(m.value is not None for m in exact):  # exact beats the sampled rows' newest event
        found.measures[:] = [m for m in found.measures if not (m.measure == exact[0].measure and m.view in STREAM_VIEWS)]  # fmt: skip
        found.measures.extend(exact)


def _workers(src: Sources, found: _Found) -> None:
    if not src.stream_metrics:
        why = "pin_engagement rows carry no write time: give --stream-metrics (the workers' /metrics)"  # fmt: skip
        found.measures.extend(Measure(PIN_ENGAGEMENT, m, None, job="streams", note=why) for m in (PIPELINE_FRESHNESS_P50, PIPELINE_FRESHNESS_P99))  # fmt: skip
        return
    texts, answered = [], []
    for host in src.stream_metrics:
        try:
            texts.append(hosts.scrape(host, src.timeout_s))
            answered.append(host)
        except UnavailableError as exc:
            found.lost(f"stream worker {host}", exc)
    if answered:
        found.measures.extend(hosts.worker_freshness_measures(texts, answered))


def _hosts(src: Sources, found: _Found) -> None:
    answers: dict[str, str | None | Exception] = {}
    for host in src.serving_hosts:
        try:
            answers[host] = hosts.served_version(hosts.scrape(host, src.timeout_s))
        except UnavailableError as exc:
            answers[host] = exc
            found.lost(f"serving {host}", exc)
    found.measures.extend(hosts.host_measures(answers))


def _view_targets(store: feast.FeatureStore | None, found: _Found) -> dict[str, float]:
    """Each view's freshness_target_s tag: from the store's registry, else the declarations."""
    if store is not None:
        try:
            targets = slos_mod.view_targets(store)
            if targets:
                return targets
        except (FeastError, TowerlineError, OSError, ValueError) as exc:
            log.debug("view targets from the registry failed: %s", exc)
    return slos_mod.declared_view_targets()
