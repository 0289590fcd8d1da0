"""pin_engagement: exponentially time-decayed counts per action, as pure functions.

A state is the four counts valid at ``ref_ms``. A count of weight ``w`` at event time
``ts`` is worth ``w * 2 ** ((ts - t) / H)`` at time ``t >= ts``. Merging expresses both
sides at ``t' = max(ref_a, ref_b)`` and adds:

    v' = v_a * 2 ** ((ref_a - t') / H) + v_b * 2 ** ((ref_b - t') / H)

which is commutative and associative, so replaying the same events in any arrival order
gives the same counts (up to float rounding) and ``ref_ms`` is the newest event time.
It is not idempotent: exactly-once comes from the state store, not from here.
"""

from typing import NamedTuple

ACTIONS = 4  # len(towerline.core.contracts.ENGAGEMENT_ACTIONS)


class Decayed(NamedTuple):
    """Counts per action (ENGAGEMENT_ACTIONS order) as of ``ref_ms`` (= last event time)."""

    values: tuple[float, float, float, float]
    ref_ms: int


_new = tuple.__new__  # skips NamedTuple's Python-level __new__ (per event)
_UNITS = [tuple(1.0 if i == a else 0.0 for i in range(ACTIONS)) for a in range(ACTIONS)]


def unit(action: int, ts_ms: int) -> Decayed:
    """One event of ``action`` at ``ts_ms``."""
    return _new(Decayed, (_UNITS[action], ts_ms))


def merge(a: Decayed | None, b: Decayed | None, half_life_ms: float) -> Decayed | None:
    """The state holding the events of both ``a`` and ``b``; ``None`` is the empty state."""
    if a is None:
        return b
    if b is None:
        return a
    ref = max(a.ref_ms, b.ref_ms)
    fa = 2.0 ** ((a.ref_ms - ref) / half_life_ms)
    fb = 2.0 ** ((b.ref_ms - ref) / half_life_ms)
    va, vb = a.values, b.values
    return Decayed(
        (va[0] * fa + vb[0] * fb, va[1] * fa + vb[1] * fb,
         va[2] * fa + vb[2] * fb, va[3] * fa + vb[3] * fb),
        ref,
    )  # fmt: skip


def add(state: Decayed | None, action: int, ts_ms: int, half_life_ms: float) -> Decayed:
    """``state`` plus one event (the pure ``(event, state) -> state`` handler).

    Equal to ``merge(state, unit(action, ts_ms))`` bit for bit (one side's factor is
    exactly 1), without building the unit.
    """
    if state is None:
        return unit(action, ts_ms)
    values, ref_ms = state
    if ts_ms > ref_ms:
        f = 2.0 ** ((ref_ms - ts_ms) / half_life_ms)
        v = [values[0] * f, values[1] * f, values[2] * f, values[3] * f]
        v[action] += 1.0
        return _new(Decayed, (tuple(v), ts_ms))
    v = list(values)
    v[action] += 2.0 ** ((ts_ms - ref_ms) / half_life_ms)
    return _new(Decayed, (tuple(v), ref_ms))


def value_at(state: Decayed, t_ms: int, half_life_ms: float) -> tuple[float, ...]:
    """The counts decayed forward to ``t_ms`` (>= ref_ms), e.g. at read time."""
    factor = 2.0 ** ((state.ref_ms - t_ms) / half_life_ms)
    return tuple(v * factor for v in state.values)
