"""``generate``: sample the world chunk by chunk and write the lake, truth and world.json."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from schemas.arrow import ENGAGEMENT, OFFSITE_CONVERSION, USER_PROFILE
from schemas.lake import partition_dir, table_dir
from towerline.core.contracts import CONVERSION_ACTIONS, ENGAGEMENT_ACTIONS
from towerline.world import sample as S
from towerline.world import write as W
from towerline.world.config import WorldConfig, validate
from towerline.world.events import DayEvents, sample_engagements, sample_offsite, with_sessions
from towerline.world.pins import Catalog, Pools, build_pools, sample_catalog
from towerline.world.sessions import session_pins
from towerline.world.staging import check_out, staged_dir
from towerline.world.users import Population, sample_effects, sample_population
from towerline.world.worlddoc import world_doc

USER_TRUTH_PATH = "truth/user_interests.parquet"
PIN_TRUTH_PATH = "truth/pins.parquet"
CONVERSION_TRUTH_PATH = "truth/conversions.parquet"


@dataclasses.dataclass(frozen=True)
class _EventKind:
    table: str
    schema: pa.Schema
    prefix: str
    symbols: tuple[str, ...]


OFFSITE = _EventKind("offsite_conversions", OFFSITE_CONVERSION, "o-", CONVERSION_ACTIONS)
ENGAGEMENTS = _EventKind("engagements", ENGAGEMENT, "e-", ENGAGEMENT_ACTIONS)


def generate(cfg: WorldConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Generate the world of ``cfg`` into ``out_dir`` (absent, or an empty directory).

    Returns ``{"users", "pins", "days", "offsite_events", "engagement_events", "seconds",
    "out"}``. The world is written into a hidden staging sibling and renamed onto
    ``out_dir`` only when complete, so a failed or interrupted run (Ctrl-C) leaves nothing
    at ``out_dir`` for a later job to mistake for a world.
    """
    if not isinstance(cfg, WorldConfig):
        raise TypeError(f"cfg must be a WorldConfig, got {type(cfg).__name__}")
    validate(cfg)
    out = Path(out_dir)
    check_out(out)
    start = time.perf_counter()
    with staged_dir(out) as staging:
        with _progress_bar(progress) as bar:
            doc = _generate(cfg, staging, bar)
        W.write_json(doc, staging / "world.json")
    seconds = round(time.perf_counter() - start, 3)
    return {
        "users": cfg.users,
        "pins": cfg.pins,
        "days": cfg.days,
        "offsite_events": doc["counts"]["offsite_events"],
        "engagement_events": doc["counts"]["engagement_events"],
        "seconds": seconds,
        "out": str(out),
    }


def _progress_bar(enabled: bool) -> Progress:
    # stderr, so a caller's stdout (e.g. the bench's JSON line) stays clean.
    return Progress(
        TextColumn("[bold]world[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


@dataclasses.dataclass
class _Run:
    """The state shared by every chunk of one generation."""

    cfg: WorldConfig
    out: Path
    first_ms: int  # midnight UTC of the first covered day, ms since the epoch
    catalog: Catalog
    pools: Pools
    effects: dict[str, np.ndarray]
    writer: W.BackgroundWriter
    per_day: dict[str, np.ndarray]  # event table -> (D,) events written per day
    sessions: dict[str, int]  # session counts for world.json


def _generate(cfg: WorldConfig, out: Path, bar: Progress) -> dict[str, Any]:
    """Sample and write everything but world.json; returns the world.json document."""
    chunks = -(-cfg.users // cfg.chunk_users)
    task = bar.add_task("pins", total=chunks + 1)
    run = _start(cfg, out)
    bar.advance(task)
    users_path = table_dir(out, "users") / "part-0.parquet"
    users_path.parent.mkdir(parents=True)
    with (
        pq.ParquetWriter(users_path, USER_PROFILE) as users_out,
        pq.ParquetWriter(out / USER_TRUTH_PATH, W.USER_TRUTH) as truth_out,
        pq.ParquetWriter(out / CONVERSION_TRUTH_PATH, W.CONVERSION_TRUTH) as conversions_out,
    ):
        try:
            for chunk in range(chunks):
                lo, hi = chunk * cfg.chunk_users, min((chunk + 1) * cfg.chunk_users, cfg.users)
                bar.update(task, description=f"users {lo + 1:,}-{hi:,} of {cfg.users:,}")
                pop, conversions = _chunk(run, chunk, np.arange(lo + 1, hi + 1, dtype=np.int64))
                users_out.write_table(W.user_table(pop, run.first_ms))
                truth_out.write_table(W.user_truth_table(pop))
                # Only the writer thread touches this writer, in chunk order.
                run.writer.submit(conversions_out.write_table, conversions)
                bar.advance(task)
        finally:
            run.writer.close()
    bar.update(task, description="done")
    truth = {
        "user_interests": USER_TRUTH_PATH,
        "pins": PIN_TRUTH_PATH,
        "conversions": CONVERSION_TRUTH_PATH,
    }
    return world_doc(cfg, run.catalog, run.effects, run.per_day, truth, run.sessions)


def _start(cfg: WorldConfig, out: Path) -> _Run:
    """Sample and write the pins (snapshot + truth); the state for the user chunks."""
    first_ms = (cfg.first_date - dt.date(1970, 1, 1)).days * S.DAY_MS
    catalog = sample_catalog(S.rng_for(cfg.seed, S.STREAM_CATALOG), cfg)
    effects = sample_effects(S.rng_for(cfg.seed, S.STREAM_EFFECTS), cfg)
    # Profiles are valid from the first covered midnight, before any event that uses them.
    W.write_table(W.pin_table(catalog, first_ms), table_dir(out, "pins") / "part-0.parquet")
    W.write_table(W.pin_truth_table(catalog), out / PIN_TRUTH_PATH)
    per_day = {kind.table: np.zeros(cfg.days, dtype=np.int64) for kind in (OFFSITE, ENGAGEMENTS)}
    pools = build_pools(catalog, cfg)
    writer = W.BackgroundWriter()
    return _Run(cfg, out, first_ms, catalog, pools, effects, writer, per_day, {})


def _chunk(run: _Run, chunk: int, user_ids: np.ndarray) -> tuple[Population, pa.Table]:
    """Sample users ``user_ids`` (n,) and their events; queue the event files. Returns the
    users and the planted truth of their conversions."""
    cfg, prior = run.cfg, run.catalog.interest_prior
    pop = sample_population(
        S.rng_for(cfg.seed, S.STREAM_USERS, chunk), cfg, user_ids, prior, run.effects
    )
    args = (cfg, pop, run.pools, prior, run.first_ms)
    session_rng = S.rng_for(cfg.seed, S.STREAM_SESSIONS, chunk)
    off, intents, plan = sample_offsite(
        S.rng_for(cfg.seed, S.STREAM_OFFSITE, chunk), *args, session_rng=session_rng
    )
    ambient = sample_engagements(S.rng_for(cfg.seed, S.STREAM_ENGAGEMENTS, chunk), *args)
    pin, action = session_pins(session_rng, cfg, run.pools, plan)
    users = off.user[plan.conv]
    eng, rows = with_sessions(ambient, users, pin, action, plan.offset, run.first_ms, cfg.days)
    # At most one chunk is being written while the next one is sampled (bounded memory).
    run.writer.drain()
    first_off = int(run.per_day[OFFSITE.table].sum())
    first_eng = int(run.per_day[ENGAGEMENTS.table].sum())
    truth = W.conversion_truth_table(
        first_off, pop.user_ids, off, intents, plan, first_eng + rows, eng.ts_ms[rows]
    )
    for kind, events in ((OFFSITE, off), (ENGAGEMENTS, eng)):
        _submit_days(run, kind, events, pop.user_ids, chunk)
    for name, count in (
        ("session_conversions", plan.session.sum()),
        ("explore_conversions", plan.explore.sum()),
        ("session_engagement_events", len(plan.conv)),
    ):
        run.sessions[name] = run.sessions.get(name, 0) + int(count)
    return pop, truth


def _submit_days(
    run: _Run, kind: _EventKind, events: DayEvents, user_ids: np.ndarray, chunk: int
) -> None:
    """Queue one ``part-<chunk>.parquet`` per day (empty days too, so every dt exists).

    Event ids number the rows chunk by chunk, day by day: deterministic and unique.
    """
    counts = run.per_day[kind.table]
    first_id = int(counts.sum())
    for day in range(run.cfg.days):
        rows = events.day_slice(day)
        path = partition_dir(run.out, kind.table, run.cfg.first_date + dt.timedelta(days=day))
        run.writer.submit(
            _write_events,
            path / f"part-{chunk}.parquet",
            kind,
            first_id + rows.start,
            user_ids[events.user[rows]],
            events.pin[rows] + 1,
            events.action[rows],
            events.ts_ms[rows],
        )
    counts += events.day_counts


def _write_events(
    path: Path,
    kind: _EventKind,
    first_id: int,
    user_id: np.ndarray,
    pin_id: np.ndarray,
    action: np.ndarray,
    ts_ms: np.ndarray,
) -> None:
    table = W.event_table(
        kind.schema, kind.prefix, first_id, user_id, pin_id, action, ts_ms, kind.symbols
    )
    W.write_table(table, path)
