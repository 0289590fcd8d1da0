"""The serving hosts' plots: the version each host serves now, and over time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from monitoring.svg import (
    HEIGHT,
    LEFT,
    PLOT_H,
    PLOT_W,
    RIGHT,
    TOP,
    WIDTH,
    Series,
    num,
    open_plot,
    text,
    time_axis,
)


@dataclass(frozen=True)
class Host:
    name: str
    version: int | None  # None: it did not answer or reported no version
    up: bool


def host_versions(view: str, hosts: Sequence[Host]) -> str:
    """One bar per host, length the version it serves; hosts behind the newest one served
    are highlighted, hosts down are grey and say so."""
    newest = max((h.version for h in hosts if h.version is not None), default=0)
    row = min(36.0, PLOT_H / max(len(hosts), 1))
    left = LEFT + 90
    width = WIDTH - left - RIGHT - 60
    parts = [open_plot(view, "host-versions", "model version served per host")]
    for i, h in enumerate(hosts):
        y = TOP + i * row
        parts.append(text(left - 8, y + row / 2 + 4, h.name[:22], "host", "end"))
        if h.version is None or not h.up:
            parts.append(
                f'<rect class="host-down" x="{left}" y="{num(y + 5)}" width="{width}" height="{num(row - 10)}" rx="3"/>'
            )
            parts.append(text(left + 8, y + row / 2 + 4, "down / no version", "host-note", "start"))
            continue
        behind = h.version < newest
        w = max(h.version / max(newest, 1) * width, 4)
        cls = "host-behind" if behind else "host-ok"
        parts.append(
            f'<rect class="{cls}" x="{left}" y="{num(y + 5)}" width="{num(w)}" height="{num(row - 10)}" rx="3">'
            f"<title>{escape(f'{h.name}: v{h.version}')}</title></rect>"
        )
        note = f"v{h.version}" + (f"  ({newest - h.version} behind)" if behind else "")
        parts.append(
            text(
                left + w + 6,
                y + row / 2 + 4,
                note,
                "host-behind-label" if behind else "host-label",
                "start",
            )
        )
    parts.append(
        text(
            left + width / 2,
            HEIGHT - 6,
            "model version served (bar length: version number)",
            "axis-title",
        )
    )
    return "".join(parts) + "</svg>"


# Colours of the versions in the host timeline: the newest, the one before, any older.
VERSION_COLORS = ("#4e79a7", "#e8912d", "#b07aa1")


def host_timeline(view: str, times: Sequence[float], hosts: Sequence[Series]) -> str:
    """One row per host over time, a band per stretch on one version, labelled "vN": a
    host left behind after a publish shows as a band of another colour."""
    versions = sorted({int(v) for h in hosts for v in h.values if v is not None}, reverse=True)
    gap = (times[-1] - times[-2]) if len(times) > 1 else 1800.0
    start, end = times[0], times[-1] + gap
    row = min(40.0, PLOT_H / max(len(hosts), 1))
    left = LEFT + 44

    def x_of(t: float) -> float:
        return left + (t - start) / (end - start) * (LEFT + PLOT_W - left)

    parts = [open_plot(view, "host-versions-time", "model version per host over time")]
    for i, h in enumerate(hosts):
        y = TOP + i * row
        parts.append(text(left - 8, y + row / 2 + 4, h.label[:16], "host", "end"))
        j = 0
        while j < len(times):
            v = h.values[j]
            k = j + 1
            while k < len(times) and h.values[k] == v:
                k += 1
            if v is not None:
                x0, x1 = x_of(times[j]), x_of(times[k] if k < len(times) else end)
                color = VERSION_COLORS[min(versions.index(int(v)), len(VERSION_COLORS) - 1)]
                parts.append(
                    f'<rect x="{num(x0)}" y="{num(y + 5)}" width="{num(max(x1 - x0, 1))}" height="{num(row - 10)}" '
                    f'fill="{color}"><title>{escape(f"{h.label}: v{int(v)}")}</title></rect>'
                )
                if x1 - x0 > 26:
                    parts.append(text((x0 + x1) / 2, y + row / 2 + 4, f"v{int(v)}", "band-label"))
            j = k
    bottom = TOP + len(hosts) * row + 4
    parts.append(time_axis(start, end, x_of, bottom, left))
    parts.append(text(left + (LEFT + PLOT_W - left) / 2, bottom + 36, "time (UTC)", "axis-title"))
    return "".join(parts) + "</svg>"
