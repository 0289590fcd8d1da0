"""The report's plots as inline SVG: pure functions from numbers to markup, no library.

Every plot is one ``<svg class="plot" data-view=… data-kind=…>``; a plot without data is
a "no data: <why>" figure of the same size, never an empty or broken one. Coordinates are
written with one decimal so the same numbers always give the same bytes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from monitoring import report_units as units

WIDTH, HEIGHT = 560, 250
LEFT, RIGHT, TOP, BOTTOM = 66, 18, 24, 50
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

BAR, BAR_BEYOND, TARGET, INK, GRID = "#4e79a7", "#e15759", "#c2185b", "#57606a", "#e4e7eb"
PALETTE = (
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2",
    "#edc948", "#9c755f", "#ff9da7", "#1f77b4", "#8c564b",
)  # fmt: skip

# Edges of the age histogram: round numbers from 100 ms to a year, about ×2–×3 apart, so a
# bar covers a span people name ("1–5 min", "6–12 h") whatever the view's timescale.
AGE_EDGES: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1, 2, 5, 10, 30,
    60, 120, 300, 600, 1800,
    3600, 2 * 3600, 6 * 3600, 12 * 3600,
    86400, 2 * 86400, 4 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 90 * 86400,
    180 * 86400, 365 * 86400,
)  # fmt: skip
MIN_BINS = 6


def num(x: float) -> str:
    return f"{x:.1f}"


def _attr(text: str) -> str:
    return escape(text, quote=True)


def open_plot(view: str, kind: str, label: str) -> str:
    return (
        f'<svg class="plot" data-view="{_attr(view)}" data-kind="{_attr(kind)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{_attr(label)}" '
        'xmlns="http://www.w3.org/2000/svg">'
    )


def text(x: float, y: float, content: str, cls: str = "", anchor: str = "middle") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}"{klass}>{escape(content)}</text>'


def empty(view: str, kind: str, why: str) -> str:
    """The figure shown instead of a plot: a framed "no data: <why>"."""
    return (
        open_plot(view, f"{kind} empty", f"no data: {why}")
        + f'<rect class="empty-frame" x="1" y="1" width="{WIDTH - 2}" height="{HEIGHT - 2}" rx="8"/>'
        + text(WIDTH / 2, HEIGHT / 2 - 4, "no data", "empty-title")
        + text(WIDTH / 2, HEIGHT / 2 + 18, why[:110], "empty-why")
        + "</svg>"
    )


def age_edges(values: Sequence[float], target: float | None = None) -> list[float]:
    """Histogram edges from ``AGE_EDGES`` covering the values (and the target), at least
    ``MIN_BINS`` bins; a first edge of 0 when values fall below 100 ms."""
    lo = min([*values, *([target] if target is not None else [])])
    hi = max([*values, *([target] if target is not None else [])])
    first = max(0, bisect.bisect_right(AGE_EDGES, lo) - 1)
    last = min(len(AGE_EDGES) - 1, bisect.bisect_right(AGE_EDGES, hi))
    while last - first < MIN_BINS and (first > 0 or last < len(AGE_EDGES) - 1):
        if last < len(AGE_EDGES) - 1:
            last += 1
        if last - first < MIN_BINS and first > 0:
            first -= 1
    edges = list(AGE_EDGES[first : last + 1])
    if lo < edges[0]:
        edges.insert(0, 0.0)
    return edges


def bin_counts(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin [edges[i], edges[i+1]); below the first edge counts in the first bin,
    at or beyond the last in the last, so every value is drawn."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        i = bisect.bisect_right(edges, v) - 1
        counts[min(max(i, 0), len(counts) - 1)] += 1
    return counts


def edge_position(value: float, edges: Sequence[float]) -> float:
    """Where ``value`` sits on the equal-width bins, in bins from the left (log within a
    bin, linear in a first bin starting at 0); clamped to the axis."""
    if value <= edges[0]:
        return 0.0
    if value >= edges[-1]:
        return float(len(edges) - 1)
    i = bisect.bisect_right(edges, value) - 1
    a, b = edges[i], edges[i + 1]
    within = (value - a) / (b - a) if a <= 0 else math.log(value / a) / math.log(b / a)
    return i + within


def _y_axis(ticks: Sequence[float], top: float, labels: Sequence[str]) -> str:
    parts = []
    for t, label in zip(ticks, labels, strict=True):
        y = TOP + PLOT_H - t / top * PLOT_H
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{num(y)}" y2="{num(y)}"/>'
        )
        parts.append(text(LEFT - 6, y + 4, label, "tick", "end"))
    return "".join(parts)


def _axis_titles(x_title: str, y_title: str) -> str:
    return (
        text(LEFT + PLOT_W / 2, HEIGHT - 6, x_title, "axis-title")
        + f'<text class="axis-title" text-anchor="middle" transform="translate(14 {num(TOP + PLOT_H / 2)}) '
        f'rotate(-90)">{escape(y_title)}</text>'
    )


def _target_line(y: float, label: str) -> str:
    return (
        f'<line class="target" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{num(y)}" y2="{num(y)}"/>'
        + text(LEFT + PLOT_W - 4, y - 5, label, "target-label", "end")
    )


def histogram(
    view: str,
    ages: Sequence[float],
    *,
    target: float | None,
    target_label: str,
    beyond_breaches: bool,
    markers: Sequence[tuple[str, float]] = (),
) -> str:
    """Row ages on log-ish bins; the target as a vertical line. Bars past the target are
    red only when the target is a row-age SLO (``beyond_breaches``), else it is a mark."""
    edges = age_edges(ages, target)
    counts = bin_counts(ages, edges)
    ticks = units.linear_ticks(max(counts), durations=False, most=4)
    top = ticks[-1]
    width = PLOT_W / len(counts)
    parts = [
        open_plot(view, "age-histogram", f"row ages of {view}"),
        _y_axis(ticks, top, [units.count(t) for t in ticks]),
    ]
    for i, c in enumerate(counts):
        h = c / top * PLOT_H
        beyond = beyond_breaches and target is not None and edges[i] >= target
        span = f"{units.duration(edges[i])} – {units.duration(edges[i + 1])}: {units.count(c)} rows"
        parts.append(
            f'<rect class="bar" x="{num(LEFT + i * width + 1)}" y="{num(TOP + PLOT_H - h)}" '
            f'width="{num(max(width - 2, 1))}" height="{num(h)}" fill="{BAR_BEYOND if beyond else BAR}">'
            f"<title>{escape(span)}</title></rect>"
        )
    every = 1 if len(edges) <= 12 else 2
    for i, e in enumerate(edges):
        x = LEFT + i * width
        parts.append(
            f'<line class="axis" x1="{num(x)}" x2="{num(x)}" y1="{TOP + PLOT_H}" y2="{TOP + PLOT_H + 4}"/>'
        )
        if i % every == 0:
            parts.append(text(x, TOP + PLOT_H + 17, units.duration(e), "tick"))
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{TOP + PLOT_H}" y2="{TOP + PLOT_H}"/>'
    )
    for label, value in markers:
        x = LEFT + edge_position(value, edges) * width
        parts.append(
            f'<line class="marker" x1="{num(x)}" x2="{num(x)}" y1="{TOP}" y2="{TOP + PLOT_H}"/>'
        )
        parts.append(text(x + 3, TOP + 10, label, "marker-label", "start"))
    if target is not None:
        x = LEFT + edge_position(target, edges) * width
        parts.append(
            f'<line class="target" x1="{num(x)}" x2="{num(x)}" y1="{TOP - 4}" y2="{TOP + PLOT_H}"/>'
        )
        anchor = "end" if x > LEFT + PLOT_W * 0.7 else "start"
        parts.append(
            text(x + (-4 if anchor == "end" else 4), TOP - 8, target_label, "target-label", anchor)
        )
    parts.append(_axis_titles("row age (now − event time), log-ish bins", "rows"))
    return "".join(parts) + "</svg>"


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


@dataclass(frozen=True)
class Series:
    label: str
    values: tuple[float | None, ...]  # one per time of the plot; None: not measured then


def downsample(
    times: Sequence[float], series: Sequence[Series], most: int = 360
) -> tuple[list[float], list[Series]]:
    """At most ``most`` points per line: consecutive snapshots are merged, keeping the
    largest value of each (a lag spike must survive) at the time of the last one."""
    if len(times) <= most:
        return list(times), list(series)
    size = -(-len(times) // most)
    groups = [range(i, min(i + size, len(times))) for i in range(0, len(times), size)]
    merged = []
    for s in series:
        values = []
        for g in groups:
            known = [v for i in g if (v := s.values[i]) is not None]
            values.append(max(known) if known else None)
        merged.append(Series(s.label, tuple(values)))
    return [times[g[-1]] for g in groups], merged


def lines(
    view: str,
    kind: str,
    times: Sequence[float],
    series: Sequence[Series],
    *,
    durations: bool,
    y_title: str,
    target: float | None = None,
    target_label: str = "",
) -> str:
    """Series over time (epoch seconds, UTC axis), one colour each in ``PALETTE`` order; a
    gap where a value is missing; points drawn when they are few enough to tell apart."""
    # +inf (a view no run ever wrote) has no place on an axis: a gap, like a missing value.
    series = [Series(s.label, tuple(_finite(v) for v in s.values)) for s in series]
    times, series = downsample(times, series)
    values = [v for s in series for v in s.values if v is not None]
    fmt = units.duration if durations else units.count
    ticks = units.linear_ticks(max([*values, target or 0, 0]) * 1.05, durations=durations)
    top = ticks[-1]
    start, end = min(times), max(times)
    if end - start < 60:
        start, end = start - 900, end + 900

    def x_of(t: float) -> float:
        return LEFT + (t - start) / (end - start) * PLOT_W

    def y_of(v: float) -> float:
        return TOP + PLOT_H - v / top * PLOT_H

    labels = units.duration_axis(ticks) if durations else [units.compact(t) for t in ticks]
    parts = [open_plot(view, kind, f"{y_title} of {view} over time"), _y_axis(ticks, top, labels)]
    parts.append(time_axis(start, end, x_of, TOP + PLOT_H))
    if target is not None:
        parts.append(_target_line(y_of(target), target_label))
    dots = len(times) <= 48
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        path, pen_down = [], False
        for t, v in zip(times, s.values, strict=True):
            if v is None:
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{num(x_of(t))} {num(y_of(v))}")
            pen_down = True
        if path:
            parts.append(
                f'<path class="series" d="{" ".join(path)}" stroke="{color}"><title>{escape(s.label)}</title></path>'
            )
        for t, v in zip(times, s.values, strict=True):
            if v is not None and dots:
                tip = f"{s.label} · {units.time_label(t, '%b %d %H:%M')}: {fmt(v)}"
                parts.append(
                    f'<circle cx="{num(x_of(t))}" cy="{num(y_of(v))}" r="2.5" fill="{color}">'
                    f"<title>{escape(tip)}</title></circle>"
                )
    parts.append(_axis_titles("time (UTC)", y_title))
    return "".join(parts) + "</svg>"


def time_axis(
    start: float, end: float, x_of: Callable[[float], float], bottom: float, x_left: float = LEFT
) -> str:
    parts = []
    tick_times, tick_fmt = units.time_ticks(start, end)
    for t in tick_times:
        x = x_of(t)
        parts.append(
            f'<line class="axis" x1="{num(x)}" x2="{num(x)}" y1="{num(bottom)}" y2="{num(bottom + 4)}"/>'
        )
        parts.append(text(x, bottom + 17, units.time_label(t, tick_fmt), "tick"))
    parts.append(
        f'<line class="axis" x1="{num(x_left)}" x2="{LEFT + PLOT_W}" y1="{num(bottom)}" y2="{num(bottom)}"/>'
    )
    return "".join(parts)
