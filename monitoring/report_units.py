"""Numbers as people read them: durations from milliseconds to days, measures by the unit
their name ends in, and the tick steps of the report's axes. Pure functions."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from monitoring import model

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0

# Steps a duration axis may use: each one reads as a round number in its own unit.
_DURATION_STEPS: tuple[float, ...] = (
    *(m * 10.0**e for e in range(-3, 1) for m in (1, 2, 5)),
    10, 15, 30,
    *(m * MINUTE for m in (1, 2, 5, 10, 15, 30)),
    *(h * HOUR for h in (1, 2, 3, 6, 12)),
    *(d * DAY for d in (1, 2, 7, 14, 30, 60, 90, 180, 365)),
)  # fmt: skip

# Steps of a time-of-day axis (seconds), each aligned to UTC multiples of itself.
_TIME_STEPS: tuple[float, ...] = (
    *(m * MINUTE for m in (1, 2, 5, 10, 15, 30)),
    *(h * HOUR for h in (1, 2, 3, 6, 12)),
    *(d * DAY for d in (1, 2, 7, 14, 28, 91, 182, 364)),
)


def _short(x: float) -> str:
    """One decimal below 10, none above; a trailing ``.0`` is dropped ("1 h", "1.5 h")."""
    text = f"{x:.1f}" if abs(x) < 10 else f"{x:.0f}"
    return text[:-2] if text.endswith(".0") else text


def duration(seconds: float | None) -> str:
    """``0.35`` -> "350 ms", ``90`` -> "1.5 min", ``93600`` -> "26 h", ``None`` -> "—"."""
    if seconds is None or math.isnan(seconds):
        return "—"
    if math.isinf(seconds):
        return "never"
    if seconds < 0:
        return "−" + duration(-seconds)
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        return f"{_short(seconds * 1000)} ms"
    for unit, size in (("d", DAY), ("h", HOUR), ("min", MINUTE)):
        # 90 min reads better than 1.5 h, but 2 h better than 120 min.
        if seconds >= 2 * size or (seconds >= size and seconds % size == 0):
            return f"{_short(seconds / size)} {unit}"
    return f"{_short(seconds)} s"


def duration_axis(ticks: Sequence[float]) -> list[str]:
    """Labels of a duration axis in one unit, the one its largest tick reads best in
    ("0 h, 6 h, … 30 h" rather than "18 h, 1 d, 30 h")."""
    top = max(ticks, default=0.0)
    unit, size = "ms", 0.001
    for name, s in (("d", DAY), ("h", HOUR), ("min", MINUTE), ("s", 1.0)):
        if top >= 2 * s or (s == 1.0 and top >= 1):
            unit, size = name, s
            break
    return [f"{_short(t / size)} {unit}" if t else "0" for t in ticks]


def count(n: float) -> str:
    return f"{int(round(n)):,}"


def compact(n: float) -> str:
    """An axis count that fits beside the axis: 950, 12k, 1.5M."""
    for suffix, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{_short(n / size)}{suffix}"
    return count(n)


def measure_value(measure: str, value: float | None) -> str:
    """A measure's value in the unit its name ends in (see ``monitoring.model``)."""
    if value is None or math.isnan(value):
        return "—"
    if measure.endswith("_seconds"):
        return duration(value)
    if measure.endswith("_ratio"):
        return f"{value * 100:.1f} %"
    if measure.endswith("_bool"):
        return "yes" if value >= 0.5 else "no"
    if measure == model.HOST_VERSION:
        return f"v{int(value)}"
    if measure.endswith("_versions"):
        n = int(round(value))
        return f"{n} version" if n == 1 else f"{n} versions"
    if measure.endswith("_offsets"):
        return f"{count(value)} offsets"
    return f"{value:g}"


def measure_label(measure: str) -> str:
    """The measure's name without its unit, as words: "row_age_p99_seconds" -> "row age p99"."""
    for unit in ("_seconds", "_ratio", "_bool", "_versions", "_offsets"):
        if measure.endswith(unit):
            measure = measure[: -len(unit)]
            break
    return measure.replace("_", " ")


def utc(t: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive time is taken to be UTC already (the monitor writes UTC)."""
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def timestamp(t: dt.datetime) -> str:
    return utc(t).strftime("%Y-%m-%d %H:%M:%S UTC")


def linear_ticks(top: float, *, durations: bool, most: int = 5) -> list[float]:
    """Ticks from 0 covering ``top`` in at most ``most`` round steps (durations: round in
    their own unit, e.g. 15 min, 6 h)."""
    top = max(top, 1e-3 if durations else 1.0)
    if durations:
        step = next((s for s in _DURATION_STEPS if top / s <= most), _DURATION_STEPS[-1])
        while top / step > most:
            step *= 2
    else:
        magnitude = 10.0 ** math.floor(math.log10(top / most))
        step = next(m * magnitude for m in (1, 2, 5, 10) if top / (m * magnitude) <= most)
        step = max(step, 1.0)  # counts and offsets are whole numbers
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def time_ticks(start: float, end: float, most: int = 6) -> tuple[list[float], str]:
    """Aligned UTC ticks within [start, end] (epoch seconds) and the strftime format that
    reads them: hours within a day, dates beyond."""
    span = max(end - start, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= most), _TIME_STEPS[-1])
    first = math.ceil(start / step) * step
    ticks = [first + i * step for i in range(int((end - first) // step) + 1)]
    if step >= DAY:
        fmt = "%b %d"
    elif end - start <= DAY and _same_day(start, end):
        fmt = "%H:%M"
    else:
        fmt = "%b %d %H:%M"
    return ticks, fmt


def _same_day(a: float, b: float) -> bool:
    day = dt.datetime.fromtimestamp(a, dt.UTC).date()
    return day == dt.datetime.fromtimestamp(b, dt.UTC).date()


def time_label(t: float, fmt: str) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt)


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of values already sorted."""
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]
