"""Offsite conversions and engagements of one chunk of users (pure numpy).

Each user's events form a time-ordered sequence whose latent interest is sticky: with
probability ``stickiness`` an event keeps the previous event's interest, else it is a
fresh draw from the user's drifted mixture of that day. A planted session
(``towerline.world.sessions``) may give a conversion another intent; the chain goes on
unaffected. A ``noise_rate`` of the events then show a pin of a globally drawn interest
instead (the chain is unaffected by that too).
Pins are drawn within the interest by that day's pool (Zipf popularity + trending bump).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from towerline.world.config import WorldConfig
from towerline.world.pins import Pools
from towerline.world.sample import DAY_MS, categorical, segment_starts, sorted_uniform_segments
from towerline.world.sessions import SessionPlan, plan_sessions
from towerline.world.users import Population, mixture_slots


@dataclasses.dataclass(frozen=True)
class DayEvents:
    """N events of a chunk, day-major, then by user, then by time within the user."""

    day_counts: np.ndarray  # (D,) int64 events per day index
    user: np.ndarray  # (N,) int64 local user index into the Population
    pin: np.ndarray  # (N,) int64 pin index (pin_id - 1)
    action: np.ndarray  # (N,) int8 code into the action symbols
    ts_ms: np.ndarray  # (N,) int64 ms since the epoch, UTC

    def day_slice(self, day: int) -> slice:
        """Rows of day index ``day``."""
        end = np.cumsum(self.day_counts)
        return slice(int(end[day] - self.day_counts[day]), int(end[day]))


@dataclasses.dataclass(frozen=True)
class Intents:
    """The planted interests of N events, in their ``DayEvents`` order."""

    chain: np.ndarray  # (N,) int64 the user's long-term sticky chain at the event
    intent: np.ndarray  # (N,) int64 what the event was meant to show (chain or session's)
    shown: np.ndarray  # (N,) int64 the interest its pin was drawn from (intent unless noise)
    noise: np.ndarray  # (N,) bool the pin came from a globally drawn interest instead


@dataclasses.dataclass(frozen=True)
class _World:
    """What every event draw of a chunk needs."""

    cfg: WorldConfig
    pop: Population
    pools: Pools
    prior: np.ndarray  # (K,) global interest probabilities
    first_ms: int  # midnight UTC of the first covered day, ms since the epoch


def sample_offsite(
    rng: np.random.Generator,
    cfg: WorldConfig,
    pop: Population,
    pools: Pools,
    prior: np.ndarray,
    first_ms: int,
    session_rng: np.random.Generator,
) -> tuple[DayEvents, Intents, SessionPlan]:
    """Offsite conversions: gamma-Poisson count per user (>= min_offsite), times uniform
    over the whole window and increasing per user. A planted session (``plan_sessions``,
    drawn from ``session_rng``) may replace a conversion's intent; its own stream, so the
    times, the chain and every other draw of ``rng`` are those of a world without them."""
    world = _World(cfg, pop, pools, prior, first_ms)
    counts = np.maximum(rng.poisson(cfg.offsite_per_user * pop.activity), cfg.min_offsite)
    span = cfg.days * DAY_MS
    offset = (sorted_uniform_segments(rng, counts) * span).astype(np.int64)
    offset = np.minimum(offset, span - 1)
    user = np.repeat(np.arange(len(counts)), counts)
    return _events(rng, world, user, offset, counts, cfg.conversion_action_probs, session_rng)


def sample_engagements(
    rng: np.random.Generator,
    cfg: WorldConfig,
    pop: Population,
    pools: Pools,
    prior: np.ndarray,
    first_ms: int,
) -> DayEvents:
    """Engagements: Poisson(engagement_rate x activity) per user-day, times uniform
    within the day and increasing per user."""
    world = _World(cfg, pop, pools, prior, first_ms)
    n, days = len(pop.user_ids), cfg.days
    cells = rng.poisson(np.repeat(cfg.engagement_rate * pop.activity, days)).astype(np.int64)
    day = np.repeat(np.tile(np.arange(days), n), cells)  # cells are user-major, day-minor
    within = (sorted_uniform_segments(rng, cells) * DAY_MS).astype(np.int64)
    offset = day * DAY_MS + np.minimum(within, DAY_MS - 1)
    counts = cells.reshape(n, days).sum(axis=1)
    user = np.repeat(np.arange(n), counts)
    return _events(rng, world, user, offset, counts, cfg.engagement_action_probs)[0]


def _events(
    rng: np.random.Generator,
    world: _World,
    user: np.ndarray,
    offset: np.ndarray,
    counts: np.ndarray,
    action_probs: tuple[float, ...],
    session_rng: np.random.Generator | None = None,
) -> tuple[DayEvents, Intents, SessionPlan]:
    """Pins and actions for events (N,) given user-major ``user`` and ms ``offset`` from
    the first day; ``counts`` (n,) events per user. Returns them day-major, with their
    planted interests and, given ``session_rng``, the sessions planted before them."""
    day = offset // DAY_MS
    chain, noise, noise_interest = latent_interests(rng, world, user, day, counts)
    # Day-major for the dt= partitions; a stable sort keeps user and time order per day.
    order = np.argsort(day.astype(np.int16), kind="stable")
    user, offset, chain = user[order], offset[order], chain[order]
    noise, noise_interest = noise[order], noise_interest[order]
    if session_rng is None:
        plan = SessionPlan.none(chain)
    else:
        plan = plan_sessions(session_rng, world.cfg, world.prior, offset, chain)
    intent = plan.intent
    shown = np.where(noise, noise_interest, intent)
    day_counts = np.bincount(day, minlength=world.cfg.days).astype(np.int64)
    u = rng.random(len(user))
    pin = np.empty(len(user), dtype=np.int64)
    bounds = np.concatenate(([0], np.cumsum(day_counts)))
    for d in range(world.cfg.days):  # one pool (trending bump) per day
        lo, hi = bounds[d], bounds[d + 1]
        pin[lo:hi] = world.pools.draw(d, shown[lo:hi], u[lo:hi])
    action = categorical(rng, np.asarray(action_probs), len(user)).astype(np.int8)
    events = DayEvents(day_counts, user, pin, action, world.first_ms + offset)
    return events, Intents(chain, intent, shown, noise), plan


def latent_interests(
    rng: np.random.Generator,
    world: _World,
    user: np.ndarray,
    day: np.ndarray,
    counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event (N,), ``user``/``day`` user-major: the sticky chain's int64 interest, a
    bool noise flag and the int64 interest a noisy event shows instead (else the chain's).

    Sticky chain: fresh draws (each user's first event and a 1 - stickiness share of the
    rest) are forward-filled over the sticky ones, so a run shares one interest. Noise
    leaves the chain as it is.
    """
    n_events = len(user)
    fresh = rng.random(n_events) >= world.cfg.stickiness
    fresh[segment_starts(counts)[counts > 0]] = True
    idx = np.flatnonzero(fresh)
    drawn = mixture_slots(rng, world.pop, user[idx], day[idx]).astype(np.int64)
    chain = drawn[np.cumsum(fresh) - 1]
    noise = rng.random(n_events) < world.cfg.noise_rate
    noise_interest = chain.copy()
    noise_interest[noise] = categorical(rng, world.prior, int(noise.sum()))
    return chain, noise, noise_interest


def with_sessions(
    ambient: DayEvents,
    user: np.ndarray,
    pin: np.ndarray,
    action: np.ndarray,
    offset: np.ndarray,
    first_ms: int,
    days: int,
) -> tuple[DayEvents, np.ndarray]:
    """Ambient engagements plus S session engagements (``user``/``pin``/``action``/ms
    ``offset`` from the first covered midnight, (S,) each) -> the merged events, day-major
    then by user then time (ambient first on a tie), and (S,) int64 the row of each
    session engagement in them."""
    ts = np.concatenate([ambient.ts_ms, first_ms + offset])
    users = np.concatenate([ambient.user, user])
    day = (ts - first_ms) // DAY_MS
    order = np.lexsort((ts, users, day))
    row = np.empty(len(order), dtype=np.int64)
    row[order] = np.arange(len(order))
    merged = DayEvents(
        np.bincount(day, minlength=days).astype(np.int64),
        users[order],
        np.concatenate([ambient.pin, pin])[order],
        np.concatenate([ambient.action, action])[order],
        ts[order],
    )
    return merged, row[len(ambient.user) :]
