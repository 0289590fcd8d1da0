"""Planted session intent: the moments on the platform before an offsite conversion.

A ``session_rate`` share of the conversions follow a session of 1..``session_engagements``
engagements (uniform): the newest ``MIN_GAP_MS`` + Exp(mean ``session_gap_s``) before the
conversion, each earlier one a further Exp(mean ``session_gap_s``) back, clamped to the
conversion's UTC day so a session never crosses a ``dt=`` partition or the window's first
midnight. A session has one intent: with probability ``session_explore`` an interest drawn
from the global prior (what brought the user today, which the long-term history cannot
foresee), else the user's sticky-chain interest at the conversion. The session's pins and
the conversion's pin are drawn from that intent (the conversion's still subject to
``noise_rate``); the chain itself goes on unaffected, so an explore session is a detour.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from towerline.world.config import WorldConfig
from towerline.world.pins import Pools
from towerline.world.sample import DAY_MS, categorical, segment_starts

# The newest session engagement is at least this far before its conversion: a different
# whole second, so a reader that truncates to seconds still sees it strictly before.
MIN_GAP_MS = 2_000


@dataclasses.dataclass(frozen=True)
class SessionPlan:
    """The sessions of N conversions (in their ``DayEvents`` order), S engagements in all."""

    session: np.ndarray  # (N,) bool the conversion follows a session
    explore: np.ndarray  # (N,) bool its intent was drawn from the global prior
    intent: np.ndarray  # (N,) int64 the conversion's intent (the chain's when no explore)
    count: np.ndarray  # (N,) int64 engagements of its session, 0 without one
    conv: np.ndarray  # (S,) int64 conversion row of each engagement; grouped, newest first
    offset: np.ndarray  # (S,) int64 ms since the first covered midnight

    @classmethod
    def none(cls, chain: np.ndarray) -> SessionPlan:
        """No sessions before events whose chain interests are ``chain`` (N,)."""
        n, empty = len(chain), np.zeros(0, dtype=np.int64)
        no = np.zeros(n, dtype=bool)
        return cls(no, no, chain, np.zeros(n, dtype=np.int64), empty, empty)

    @property
    def newest(self) -> np.ndarray:
        """(N,) int64 index into S of each conversion's newest session engagement, -1."""
        out = np.full(len(self.count), -1, dtype=np.int64)
        has = self.count > 0
        out[has] = segment_starts(self.count)[has]
        return out


def plan_sessions(
    rng: np.random.Generator,
    cfg: WorldConfig,
    prior: np.ndarray,
    offset: np.ndarray,
    chain: np.ndarray,
) -> SessionPlan:
    """Sessions before conversions at ms ``offset`` (N,) from the first covered midnight
    whose sticky-chain interests are ``chain`` (N,); ``prior`` (K,) global interests."""
    n = len(offset)
    within = offset % DAY_MS
    # A conversion in the first 2 s of its day has no room for a session on that day.
    session = (rng.random(n) < cfg.session_rate) & (within >= MIN_GAP_MS)
    explore = session & (rng.random(n) < cfg.session_explore)
    intent = chain.copy()
    intent[explore] = categorical(rng, prior, int(explore.sum()))
    count = np.where(session, rng.integers(1, cfg.session_engagements + 1, n), 0)
    conv = np.repeat(np.arange(n, dtype=np.int64), count)
    gaps = rng.standard_exponential(len(conv)) * (cfg.session_gap_s * 1000.0)
    # Cumulative gaps within each session: how far back each engagement lies.
    total = np.cumsum(gaps)
    starts, sizes = segment_starts(count)[count > 0], count[count > 0]
    before = np.repeat(total[starts] - gaps[starts], sizes)
    back = MIN_GAP_MS + (total - before).astype(np.int64)
    day_start = offset[conv] - within[conv]
    eng_offset = np.maximum(offset[conv] - back, day_start)
    return SessionPlan(session, explore, intent, count.astype(np.int64), conv, eng_offset)


def session_pins(
    rng: np.random.Generator, cfg: WorldConfig, pools: Pools, plan: SessionPlan
) -> tuple[np.ndarray, np.ndarray]:
    """(S,) int64 pin index and (S,) int8 engagement action of every session engagement,
    pins drawn from the session's intent in the pool of its day (no noise: a session is
    what the user came for)."""
    day = plan.offset // DAY_MS
    interest = plan.intent[plan.conv]
    u = rng.random(len(day))
    pin = np.empty(len(day), dtype=np.int64)
    for d in np.unique(day):
        rows = day == d
        pin[rows] = pools.draw(int(d), interest[rows], u[rows])
    action = categorical(rng, np.asarray(cfg.engagement_action_probs), len(day))
    return pin, action.astype(np.int8)
