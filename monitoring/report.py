"""The freshness report: one self-contained HTML page from a snapshot and the history.

``render`` is pure: the page holds no current time (every time comes from the snapshots),
loads nothing from the network (inline CSS, plots as inline SVG, system fonts), and gives
the same bytes for the same input. Every text from the data is escaped.

Reading order is the order of the morning check: is anything breached (SLO status at the
top), then one section per feature view with its row-age histogram and its lag over time,
then the index and the serving hosts, then every measure in one table.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from monitoring import model
from monitoring import report_units as units
from monitoring import report_views as views
from monitoring.report_style import CSS
from towerline.core import contracts

_STATUS_RANK = {model.BREACH: 0, model.UNKNOWN: 1, model.OK: 2}


def render(snapshot: model.Snapshot, history: Sequence[model.Snapshot]) -> str:
    """The report page. ``history`` is the snapshots read back from the history file (with or
    without ``snapshot`` itself); it feeds the plots over time."""
    timeline = _timeline(snapshot, history)
    feature_views = feature_views_of(snapshot)
    body = "".join(
        [
            _header(snapshot, timeline),
            _banner(snapshot),
            _slo_table(snapshot),
            _problems(snapshot),
            _nav(snapshot, feature_views),
            *(views.view_section(snapshot, timeline, v) for v in feature_views),
            views.index_section(snapshot, timeline),
            _measure_table(snapshot),
            _footer(snapshot, timeline),
        ]
    )
    title = f"towerline freshness · {units.timestamp(snapshot.taken_at)}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def feature_views_of(snapshot: model.Snapshot) -> list[str]:
    """The contract's views in their order, then any other view the data names."""
    known = [*contracts.BATCH_VIEWS, *contracts.STREAM_VIEWS]
    seen = (
        {m.view for m in snapshot.measures} | set(snapshot.ages) | {s.view for s in snapshot.slos}
    )
    extra = sorted(seen - set(known) - {model.INDEX, model.SERVING})
    return known + extra


def _timeline(snapshot: model.Snapshot, history: Sequence[model.Snapshot]) -> list[model.Snapshot]:
    """History and the snapshot, one per time, oldest first; the snapshot wins a tie."""
    by_time = {units.utc(s.taken_at): s for s in history}
    by_time[units.utc(snapshot.taken_at)] = snapshot
    return [by_time[t] for t in sorted(by_time)]


def _header(snapshot: model.Snapshot, timeline: Sequence[model.Snapshot]) -> str:
    span = (
        f"history: {len(timeline)} snapshots since {units.timestamp(timeline[0].taken_at)}"
        if len(timeline) > 1
        else "history: this snapshot only"
    )
    return (
        '<header class="top"><div><h1>towerline freshness</h1>'
        '<div class="muted">feature views, streams, batch runs and the served index</div></div>'
        f'<div class="when">measured <b>{escape(units.timestamp(snapshot.taken_at))}</b><br>'
        f"{escape(span)}</div></header>"
    )


def _banner(snapshot: model.Snapshot) -> str:
    counts = {status: sum(s.status == status for s in snapshot.slos) for status in _STATUS_RANK}
    if counts[model.BREACH]:
        cls, headline = model.BREACH, f"{_slos(counts[model.BREACH])} breached"
    elif counts[model.UNKNOWN] or snapshot.unreachable:
        cls, headline = model.UNKNOWN, f"{_slos(counts[model.UNKNOWN])} not measured"
    elif snapshot.slos:
        cls, headline = model.OK, f"all {len(snapshot.slos)} SLOs hold"
    else:
        cls, headline = model.UNKNOWN, "no SLO was judged"
    detail = (
        f"{counts[model.BREACH]} breached · {counts[model.UNKNOWN]} unknown · {counts[model.OK]} ok"
        + (f" · {len(snapshot.unreachable)} source(s) unreachable" if snapshot.unreachable else "")
    )
    return f'<div class="banner {cls}">{escape(headline)}<small>{escape(detail)}</small></div>'


def _slos(n: int) -> str:
    return "1 SLO" if n == 1 else f"{n} SLOs"


def _slo_table(snapshot: model.Snapshot) -> str:
    order = sorted(enumerate(snapshot.slos), key=lambda p: (_STATUS_RANK.get(p[1].status, 1), p[0]))
    rows = []
    for _, s in order:
        rows.append(
            f'<tr class="slo {escape(s.status, quote=True)}">'
            f'<td><span class="pill {escape(s.status, quote=True)}">{escape(s.status)}</span></td>'
            f"<td><code>{escape(s.slo)}</code></td><td><code>{escape(s.view)}</code></td>"
            f"<td>{escape(units.measure_label(s.measure))}</td>"
            f'<td class="num">{escape(units.measure_value(s.measure, s.worst))}</td>'
            f'<td class="num">{escape(views.target_text(s))}</td><td class="wrap">{escape(s.detail)}</td></tr>'
        )
    if not rows:
        rows.append('<tr><td colspan="7" class="muted">no SLO results in this snapshot</td></tr>')
    return (
        '<section class="card" id="slos"><h3>SLO status</h3><table><thead><tr><th>status</th>'
        "<th>SLO</th><th>view</th><th>measure</th><th>worst value</th><th>target</th>"
        f"<th>detail</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _problems(snapshot: model.Snapshot) -> str:
    items = [f"<li><b>unreachable:</b> {escape(u)}</li>" for u in snapshot.unreachable]
    items += [f"<li>{escape(n)}</li>" for n in snapshot.notes]
    if not items:
        return ""
    return f'<section class="card problems"><h3>Sources and notes</h3><ul>{"".join(items)}</ul></section>'


def _nav(snapshot: model.Snapshot, feature_views: Sequence[str]) -> str:
    links = [
        f'<a href="#view-{escape(v, quote=True)}"><span class="dot {views.view_status(snapshot, v)}">'
        f"</span>{escape(v)}</a>"
        for v in feature_views
    ]
    links.append('<a href="#view-index">index and serving</a><a href="#measures">all measures</a>')
    return f'<nav class="views">{"".join(links)}</nav>'


def _measure_table(snapshot: model.Snapshot) -> str:
    view_rank = {
        v: i for i, v in enumerate([*feature_views_of(snapshot), model.INDEX, model.SERVING])
    }
    ordered = sorted(
        snapshot.measures,
        key=lambda m: (
            view_rank.get(m.view, len(view_rank)),
            views.measure_rank(m.measure),
            m.measure,
            m.job,
            views.label_key(m.partition),
            m.host,
        ),
    )
    rows = []
    for m in ordered:
        labels = " ".join(
            f"{k}={v}"
            for k, v in (("job", m.job), ("partition", m.partition), ("host", m.host))
            if v
        )
        note = m.note + (
            f" (sample {units.count(m.sample)})"
            if m.sample is not None and str(m.sample) not in m.note
            else ""
        )
        raw = "not measured" if m.value is None else repr(m.value)
        rows.append(
            f'<tr class="{"unmeasured" if m.value is None else "measured"}"><td><code>{escape(m.view)}</code></td>'
            f"<td><code>{escape(m.measure)}</code></td><td>{escape(labels)}</td>"
            f'<td class="num" title="{escape(raw, quote=True)}">{escape(units.measure_value(m.measure, m.value))}</td>'
            f'<td class="wrap">{escape(note.strip())}</td></tr>'
        )
    if not rows:
        rows.append('<tr><td colspan="5" class="muted">no measures in this snapshot</td></tr>')
    return (
        f'<section class="card" id="measures"><h3>Every measure ({len(snapshot.measures)})</h3><table>'
        "<thead><tr><th>view</th><th>measure</th><th>labels</th><th>value</th><th>note</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _footer(snapshot: model.Snapshot, timeline: Sequence[model.Snapshot]) -> str:
    return (
        f"<footer>towerline freshness report · snapshot {escape(units.timestamp(snapshot.taken_at))} · "
        f"{len(timeline)} snapshot(s) in the plots over time · self-contained page, no network</footer>"
    )
