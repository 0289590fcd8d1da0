"""The one frozen config of the synthetic world, validated on construction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import numbers
from typing import Any

from towerline.core.contracts import CONVERSION_ACTIONS, ENGAGEMENT_ACTIONS
from towerline.core.errors import InputError

# Above this the per-chunk (users x interests) Gumbel matrices stop fitting comfortably.
MAX_INTERESTS = 1024


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Every knob of the generator; the same config and seed give identical tables.

    Sizes: ``users`` and ``pins`` (ids are 1-based), ``days`` ending at ``end_date``
    inclusive. Interests: ``interests`` categories whose global log-popularity has
    standard deviation ``interest_spread``; pins carry 1-3 of them and are Zipf popular
    (``zipf_exponent``) within their primary interest. Users hold 1..``max_user_interests``
    interests (capped at ``interests``) with Dirichlet(``dirichlet_alpha``) weights whose
    log drifts linearly with a per-day slope of std ``drift``; demographics shift interest
    choice by ``demographic_signal``. Offsite conversions: about ``offsite_per_user`` per user
    (gamma-Poisson, gamma shape ``activity_shape``, at least ``min_offsite``), sticky to the
    previous interest with probability ``stickiness``, ``noise_rate`` drawn from global
    popularity. Engagements: Poisson(``engagement_rate`` x activity) per user-day.
    Sessions (planted intent): a ``session_rate`` share of the conversions follow an
    on-platform session of 1..``session_engagements`` engagements, the newest at least
    2 s and on average 2 s + ``session_gap_s`` before it, each earlier one a further
    Exp(``session_gap_s``) back (never before the conversion's UTC day); with probability
    ``session_explore`` the session's intent is drawn from the global interest prior instead
    of the user's sticky chain, and both the session's pins and the conversion's pin are
    drawn from that intent (see ``towerline.world.sessions``).
    ``trending_rate`` of the pins get a Gaussian bump (width ``trending_width_days``) that
    at its peak adds ``trending_peak_share`` of their interest's base popularity mass.
    ``chunk_users`` users are generated at a time (part of the world: changing it changes
    the random draws).
    """

    users: int = 10_000
    pins: int = 20_000
    days: int = 30
    seed: int = 0
    end_date: dt.date = dt.date(2025, 6, 30)
    interests: int = 64
    interest_spread: float = 0.7
    zipf_exponent: float = 1.1
    duplicate_rate: float = 0.05
    trending_rate: float = 0.005
    trending_peak_share: float = 0.05
    trending_width_days: float = 2.0
    max_user_interests: int = 4
    dirichlet_alpha: float = 1.0
    drift: float = 0.03
    demographic_signal: float = 0.3
    offsite_per_user: float = 50.0
    min_offsite: int = 2
    activity_shape: float = 4.0
    stickiness: float = 0.6
    noise_rate: float = 0.1
    engagement_rate: float = 0.5
    session_rate: float = 0.6
    session_explore: float = 0.5
    session_engagements: int = 2
    session_gap_s: float = 30.0
    conversion_action_probs: tuple[float, ...] = (0.72, 0.15, 0.08, 0.05)
    engagement_action_probs: tuple[float, ...] = (0.62, 0.22, 0.13, 0.03)
    chunk_users: int = 200_000

    def __post_init__(self) -> None:
        validate(self)

    @property
    def first_date(self) -> dt.date:
        """The oldest covered day (``days`` days ending at ``end_date`` inclusive)."""
        return self.end_date - dt.timedelta(days=self.days - 1)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorldConfig:
        """Inverse of ``to_json`` (world.json's ``config``); absent knobs keep defaults."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        if "end_date" in kwargs:
            kwargs["end_date"] = dt.date.fromisoformat(kwargs["end_date"])
        for name in ("conversion_action_probs", "engagement_action_probs"):
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (dates as ISO strings, tuples as lists)."""
        out = dataclasses.asdict(self)
        out["end_date"] = self.end_date.isoformat()
        out["conversion_action_probs"] = list(self.conversion_action_probs)
        out["engagement_action_probs"] = list(self.engagement_action_probs)
        return out


def _fail(field: str, value: object, rule: str) -> InputError:
    return InputError(f"WorldConfig.{field} {rule}, got {value!r}")


def _int(cfg: WorldConfig, field: str, lo: int, hi: int | None = None) -> None:
    value = getattr(cfg, field)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(field, value, "must be an integer")
    if value < lo or (hi is not None and value > hi):
        rule = f"must be >= {lo}" if hi is None else f"must be in [{lo}, {hi}]"
        raise _fail(field, value, rule)


def _real(cfg: WorldConfig, field: str, lo: float, hi: float, *, open_lo: bool = False) -> None:
    """A finite number in [lo, hi] (or (lo, hi] with ``open_lo``)."""
    value = getattr(cfg, field)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(field, value, "must be a number")
    too_low = value <= lo if open_lo else value < lo
    if not math.isfinite(value) or too_low or value > hi:
        raise _fail(field, value, f"must be in {'(' if open_lo else '['}{lo}, {hi}]")


def _probs(cfg: WorldConfig, field: str, symbols: tuple[str, ...]) -> None:
    value = getattr(cfg, field)
    ok = isinstance(value, tuple) and len(value) == len(symbols)
    ok = ok and all(isinstance(p, numbers.Real) and math.isfinite(p) and p >= 0 for p in value)
    if not ok or not math.isclose(sum(value), 1.0, abs_tol=1e-6):
        rule = f"must be a tuple of {len(symbols)} non-negative floats summing to 1 ({symbols})"
        raise _fail(field, value, rule)


def validate(cfg: WorldConfig) -> None:
    """Raise ``ValueError`` naming the first bad field."""
    _int(cfg, "users", 1)
    _int(cfg, "interests", 1, MAX_INTERESTS)
    # Every interest gets at least one pin, so sampling "a pin of interest k" never fails.
    _int(cfg, "pins", cfg.interests)
    _int(cfg, "days", 1, 3650)
    _int(cfg, "seed", 0, 2**63 - 1)
    if not isinstance(cfg.end_date, dt.date) or isinstance(cfg.end_date, dt.datetime):
        raise _fail("end_date", cfg.end_date, "must be a datetime.date")
    if cfg.end_date.toordinal() - cfg.days < dt.date(1970, 1, 1).toordinal():
        raise _fail("end_date", cfg.end_date, "must leave all days after 1970-01-01")
    _real(cfg, "interest_spread", 0.0, 10.0)
    _real(cfg, "zipf_exponent", 0.0, 5.0, open_lo=True)
    _real(cfg, "duplicate_rate", 0.0, 0.5)
    _real(cfg, "trending_rate", 0.0, 0.5)
    _real(cfg, "trending_peak_share", 0.0, 10.0)
    _real(cfg, "trending_width_days", 0.0, 365.0, open_lo=True)
    _int(cfg, "max_user_interests", 1, 8)  # capped at interests when sampling
    _real(cfg, "dirichlet_alpha", 0.0, 100.0, open_lo=True)
    _real(cfg, "drift", 0.0, 1.0)
    _real(cfg, "demographic_signal", 0.0, 5.0)
    _int(cfg, "min_offsite", 1)
    _real(cfg, "offsite_per_user", 0.0, 100_000.0, open_lo=True)
    _real(cfg, "activity_shape", 0.0, 1e6, open_lo=True)
    # stickiness 1 would freeze every user on their first interest forever.
    _real(cfg, "stickiness", 0.0, 0.99)
    _real(cfg, "noise_rate", 0.0, 1.0)
    _real(cfg, "engagement_rate", 0.0, 1000.0)
    _real(cfg, "session_rate", 0.0, 1.0)
    _real(cfg, "session_explore", 0.0, 1.0)
    _int(cfg, "session_engagements", 1, 20)
    # Above an hour a "session" is no longer the moments before the conversion.
    _real(cfg, "session_gap_s", 0.0, 3600.0, open_lo=True)
    _probs(cfg, "conversion_action_probs", CONVERSION_ACTIONS)
    _probs(cfg, "engagement_action_probs", ENGAGEMENT_ACTIONS)
    _int(cfg, "chunk_users", 1)
