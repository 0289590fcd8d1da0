"""The report's sections about things: one per feature view, one for the index and the
serving hosts. Each turns the snapshot (and the history, for plots over time) into HTML."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from html import escape

from monitoring import model, svg, svg_hosts
from monitoring import report_units as units
from towerline.core import contracts

# Order in which a view's measures are shown (the order of monitoring.model).
MEASURE_ORDER = (
    model.RUN_AGE, model.SERVED_HAS_LATEST, model.STATES_COVERAGE, model.DATA_AGE,
    model.PIPELINE_FRESHNESS_P50, model.PIPELINE_FRESHNESS_P99, model.LAG_EVENT_TIME,
    model.LAG_OFFSETS, model.ROW_AGE_P50, model.ROW_AGE_P99, model.INDEX_AGE, model.CORPUS_AGE,
    model.BEHIND_BUILT, model.BEHIND_REGISTERED, model.HOST_VERSION, model.HOST_UP,
    model.VERSION_SKEW,
)  # fmt: skip
# The SLO whose target a view's age histogram marks, best first.
_HISTOGRAM_TARGETS = (model.ROW_AGE_P99, model.ROW_AGE_P50, model.DATA_AGE, model.RUN_AGE)
_ROW_AGES = (model.ROW_AGE_P50, model.ROW_AGE_P99)
_N_OF_M = re.compile(r"(\d[\d,]*)\s+of\s+(\d[\d,]*)")


def measure_rank(name: str) -> int:
    return MEASURE_ORDER.index(name) if name in MEASURE_ORDER else len(MEASURE_ORDER)


def label_key(text: str) -> tuple[int, int | str]:
    """Partitions sort as numbers ("2" before "10"), other labels as text."""
    return (0, int(text)) if text.isdigit() else (1, text)


def slo_for(snapshot: model.Snapshot, view: str, measure: str) -> model.SloResult | None:
    return next((s for s in snapshot.slos if s.view == view and s.measure == measure), None)


def target_text(slo: model.SloResult) -> str:
    sign = "≤" if slo.comparison == "max" else "≥"
    return f"{sign} {units.measure_value(slo.measure, slo.target)}"


def sample_phrase(snapshot: model.Snapshot, view: str) -> str:
    """ "sample N of M rows" from the view's measures (their ``sample`` and ``note``)."""
    ages = snapshot.ages.get(view, ())
    sampled = sorted(
        (m for m in snapshot.measures if m.view == view and m.sample is not None),
        key=lambda m: (m.measure not in _ROW_AGES, measure_rank(m.measure)),
    )
    for m in sampled:
        found = _N_OF_M.search(m.note)
        if found:
            n, m = (int(g.replace(",", "")) for g in found.groups())
            return f"sample {units.count(n)} of {units.count(m)} rows"
    if sampled:
        note = f" ({sampled[0].note})" if sampled[0].note else ""
        return f"sample of {units.count(sampled[0].sample or 0)} rows{note}"
    return f"{units.count(len(ages))} rows, not sampled"


def _figure(title: str, sub: str, plot: str, legend: str = "", note: str = "") -> str:
    note_html = f'<p class="fig-note">{escape(note)}</p>' if note else ""
    return (
        f'<figure><figcaption><b>{escape(title)}</b> <span class="sub">{escape(sub)}</span>'
        f"</figcaption>{plot}{legend}{note_html}</figure>"
    )


def _legend(series: Sequence[svg.Series]) -> str:
    items = "".join(
        f'<span><i style="background:{svg.PALETTE[i % len(svg.PALETTE)]}"></i>{escape(s.label)}</span>'
        for i, s in enumerate(series)
    )
    return f'<div class="legend">{items}</div>'


def age_figure(snapshot: model.Snapshot, view: str) -> str:
    ages = snapshot.ages.get(view, ())
    slo = next((s for m in _HISTOGRAM_TARGETS if (s := slo_for(snapshot, view, m))), None)
    if not ages:
        notes = sorted({m.note for m in snapshot.measures if m.view == view and m.note})
        why = "no row ages sampled for this view" + (f" ({'; '.join(notes)})" if notes else "")
        return _figure("Row age", "", svg.empty(view, "age-histogram", why))
    markers = []
    for name, label in ((model.ROW_AGE_P50, "p50"), (model.ROW_AGE_P99, "p99")):
        m = next((m for m in snapshot.measures if m.view == view and m.measure == name), None)
        if m is not None and m.value is not None:
            markers.append((label, m.value))
    target_label = f"target {units.duration(slo.target)}" if slo else ""
    plot = svg.histogram(
        view,
        ages,
        target=slo.target if slo else None,
        target_label=target_label,
        beyond_breaches=bool(slo and slo.measure in _ROW_AGES),
        markers=markers,
    )
    sub = f"· {sample_phrase(snapshot, view)}"
    note = f"target line: SLO {slo.slo} ({units.measure_label(slo.measure)})" if slo else ""
    return _figure("Row age", sub, plot, note=note)


def over_time(
    snapshot: model.Snapshot,
    timeline: Sequence[model.Snapshot],
    view: str,
    kind: str,
    title: str,
    measures: Sequence[str],
    label_of: Callable[[model.Measure], str],
    target_measure: str | None = None,
    note: str = "",
    y_title: str = "",
) -> str:
    """A plot over the timeline of the given measures of ``view``, one line per label."""
    times = [units.utc(s.taken_at).timestamp() for s in timeline]
    rows: list[dict[str, float | None]] = []
    for s in timeline:
        row: dict[str, float | None] = {}
        for m in s.measures:
            if m.view == view and m.measure in measures:
                row[label_of(m)] = m.value
        rows.append(row)
    labels = sorted({k for r in rows for k, v in r.items() if v is not None}, key=label_key)
    durations = all(m.endswith("_seconds") for m in measures)
    if not labels:
        why = f"no {', '.join(units.measure_label(m) for m in measures)} in {len(timeline)} snapshot(s)"
        return _figure(title, "", svg.empty(view, kind, why))
    series = [svg.Series(lab, tuple(r.get(lab) for r in rows)) for lab in labels]
    slo = slo_for(snapshot, view, target_measure) if target_measure else None
    plot = svg.lines(
        view,
        kind,
        times,
        series,
        durations=durations,
        y_title=y_title or ("offsets behind" if not durations else "seconds"),
        target=slo.target if slo else None,
        target_label=f"target {units.measure_value(slo.measure, slo.target)}" if slo else "",
    )
    sub = f"· {len(timeline)} snapshot(s)"
    return _figure(title, sub, plot, _legend(series), note)


def _partition(m: model.Measure) -> str:
    return f"partition {m.partition}" if m.partition else "all partitions"


def _notes(snapshot: model.Snapshot, view: str, measure: str) -> str:
    return "; ".join(
        sorted(
            {
                m.note
                for m in snapshot.measures
                if m.view == view and m.measure == measure and m.note
            }
        )
    )


def tiles(snapshot: model.Snapshot, *of_views: str) -> str:
    """One tile per measure name of the views; several labels show the worst (largest)."""
    by_name: dict[tuple[str, str], list[model.Measure]] = {}
    for m in snapshot.measures:
        # Per-host measures have their own plot; a "max over hosts" tile would mislead.
        if m.view in of_views and not m.host:
            by_name.setdefault((m.view, m.measure), []).append(m)
    out = []
    for view, name in sorted(
        by_name, key=lambda k: (of_views.index(k[0]), measure_rank(k[1]), k[1])
    ):
        group = by_name[view, name]
        known = [m for m in group if m.value is not None]
        worst = max(known, key=lambda m: m.value or 0.0) if known else group[0]
        where = " · ".join(
            x
            for x in (worst.job, worst.partition and f"partition {worst.partition}", worst.host)
            if x
        )
        key = units.measure_label(name) + (f" (max, {where})" if len(group) > 1 and where else "")
        slo = slo_for(snapshot, view, name)
        cls = f" {slo.status}" if slo else ""
        out.append(
            f'<div class="tile{cls}"><div class="v">{escape(units.measure_value(name, worst.value))}</div>'
            f'<div class="k">{escape(key)}</div></div>'
        )
    return f'<div class="tiles">{"".join(out)}</div>' if out else ""


def view_status(snapshot: model.Snapshot, view: str) -> str:
    """The worst SLO status of the view ("none" without SLOs)."""
    statuses = {s.status for s in snapshot.slos if s.view == view}
    for status in (model.BREACH, model.UNKNOWN, model.OK):
        if status in statuses:
            return status
    return "none"


def view_section(snapshot: model.Snapshot, timeline: Sequence[model.Snapshot], view: str) -> str:
    if view in contracts.BATCH_VIEWS:
        kind = "batch view"
    elif view in contracts.STREAM_VIEWS:
        kind = "stream view"
    else:
        kind = "view"
    figures = [age_figure(snapshot, view)]
    if view not in contracts.STREAM_VIEWS:
        figures.append(
            over_time(snapshot, timeline, view, "run-age", "Age of the last successful run",
                      (model.RUN_AGE,), lambda m: m.job or "run", model.RUN_AGE, y_title="run age")
        )  # fmt: skip
    if view not in contracts.BATCH_VIEWS:
        figures += [
            over_time(snapshot, timeline, view, "lag-seconds", "Event-time lag per partition (now − newest applied event)",
                      (model.LAG_EVENT_TIME,), _partition, model.LAG_EVENT_TIME,
                      y_title="lag"),
            over_time(snapshot, timeline, view, "lag-offsets", "Offset lag per partition",
                      (model.LAG_OFFSETS,), _partition, model.LAG_OFFSETS,
                      _notes(snapshot, view, model.LAG_OFFSETS), "offsets behind end"),
            over_time(snapshot, timeline, view, "pipeline-freshness", "Pipeline freshness and data age",
                      (model.PIPELINE_FRESHNESS_P50, model.PIPELINE_FRESHNESS_P99, model.DATA_AGE),
                      lambda m: units.measure_label(m.measure), model.PIPELINE_FRESHNESS_P99,
                      y_title="seconds"),
        ]  # fmt: skip
    status = view_status(snapshot, view)
    return (
        f'<section class="card view" id="view-{escape(view, quote=True)}"><header>'
        f'<span class="dot {status}"></span><h2><code>{escape(view)}</code></h2>'
        f'<span class="kind">{kind}</span></header>{tiles(snapshot, view)}'
        f'<div class="grid">{"".join(figures)}</div></section>'
    )


def index_section(snapshot: model.Snapshot, timeline: Sequence[model.Snapshot]) -> str:
    hosts = hosts_of(snapshot)
    skew = next(
        (
            m
            for m in snapshot.measures
            if m.view == model.SERVING and m.measure == model.VERSION_SKEW
        ),
        None,
    )
    skew_text = units.measure_value(model.VERSION_SKEW, skew.value if skew else None)
    host_plot = (
        svg_hosts.host_versions(model.SERVING, hosts)
        if hosts
        else svg.empty(model.SERVING, "host-versions", "no serving host reported a version")
    )
    figures = [
        over_time(snapshot, timeline, model.INDEX, "index-age", "Age of the served index",
                  (model.INDEX_AGE, model.CORPUS_AGE), lambda m: units.measure_label(m.measure),
                  model.INDEX_AGE, y_title="age"),
        _figure("Version per serving host", f"· skew now: {skew_text}", host_plot),
        host_history(timeline),
    ]  # fmt: skip
    return (
        f'<section class="card view" id="view-index"><header>'
        f'<span class="dot {_worst(view_status(snapshot, model.INDEX), view_status(snapshot, model.SERVING))}">'
        f'</span><h2>Index and serving</h2><span class="kind">ANN index · serving hosts</span></header>'
        f"{tiles(snapshot, model.INDEX, model.SERVING)}"
        f'<div class="grid">{"".join(figures)}</div></section>'
    )


def _worst(a: str, b: str) -> str:
    order = (model.BREACH, model.UNKNOWN, model.OK, "none")
    return min(a, b, key=order.index)


def hosts_of(snapshot: model.Snapshot) -> list[svg_hosts.Host]:
    """The hosts named by HOST_VERSION or HOST_UP, sorted by name."""
    version: dict[str, float | None] = {}
    up: dict[str, bool] = {}
    for m in snapshot.measures:
        if m.view == model.SERVING and m.host:
            if m.measure == model.HOST_VERSION:
                version[m.host] = m.value
            elif m.measure == model.HOST_UP:
                up[m.host] = bool(m.value)
    names = sorted(set(version) | set(up))
    return [
        svg_hosts.Host(
            h,
            int(v) if (v := version.get(h)) is not None else None,
            up.get(h, version.get(h) is not None),
        )
        for h in names
    ]


def host_history(timeline: Sequence[model.Snapshot]) -> str:
    times = [units.utc(s.taken_at).timestamp() for s in timeline]
    per_host: dict[str, list[float | None]] = {}
    for i, s in enumerate(timeline):
        for m in s.measures:
            if m.view == model.SERVING and m.measure == model.HOST_VERSION and m.host:
                per_host.setdefault(m.host, [None] * len(timeline))[i] = m.value
    title = "Versions per host over time"
    if not any(v is not None for values in per_host.values() for v in values):
        why = f"no host reported a version in {len(timeline)} snapshot(s)"
        return _figure(title, "", svg.empty(model.SERVING, "host-versions-time", why))
    hosts = [svg.Series(h, tuple(per_host[h])) for h in sorted(per_host)]
    return _figure(
        title,
        f"· {len(timeline)} snapshot(s)",
        svg_hosts.host_timeline(model.SERVING, times, hosts),
    )
