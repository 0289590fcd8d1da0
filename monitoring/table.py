"""What `towerline freshness` prints: view / measure / value / target / status, then the
sample sizes, the sources that could not be reached and the notes; and what `check`
prints, one line per SLO that does not hold. Pure functions of a ``Snapshot``."""

from __future__ import annotations

from monitoring.model import BREACH, INDEX, OK, SERVING, UNKNOWN, Measure, SloResult, Snapshot
from monitoring.report_units import measure_value
from towerline.core.contracts import BATCH_VIEWS, STREAM_VIEWS

_STATUS = {OK: "ok", BREACH: "BREACH", UNKNOWN: "unknown"}


def _bound(r: SloResult) -> str:
    return f"{'<=' if r.comparison == 'max' else '>='} {measure_value(r.measure, r.target)}"


def _row_status(m: Measure, slo: SloResult | None) -> str:
    if slo is None:
        return ""
    if m.value is None:
        return _STATUS[UNKNOWN]
    holds = m.value <= slo.target if slo.comparison == "max" else m.value >= slo.target
    return _STATUS[OK] if holds else _STATUS[BREACH]


def _label(m: Measure) -> str:
    where = m.partition and f"partition {m.partition}" or m.host
    return f"{m.measure} [{where}]" if where else m.measure


_VIEWS = (*BATCH_VIEWS, *STREAM_VIEWS, INDEX, SERVING)


def _view_order(m: Measure) -> int:
    """Group the table by view, batch views first (a stable sort keeps collection order)."""
    return _VIEWS.index(m.view) if m.view in _VIEWS else len(_VIEWS)


def rows(snapshot: Snapshot) -> list[tuple[str, str, str, str, str]]:
    """(view, measure, value, target, status) per measure, in collection order."""
    slo_of = {(r.view, r.measure): r for r in snapshot.slos}
    out = []
    for m in sorted(snapshot.measures, key=_view_order):
        slo = slo_of.get((m.view, m.measure))
        target = _bound(slo) if slo else ""
        out.append((m.view, _label(m), measure_value(m.measure, m.value), target, _row_status(m, slo)))  # fmt: skip
    return out


def render_table(snapshot: Snapshot) -> str:
    head = ("view", "measure", "value", "target", "status")
    body = rows(snapshot)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [f"freshness at {snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC", fmt.format(*head).rstrip()]
    lines += [fmt.format(*r).rstrip() for r in body]
    counts = {s: sum(r.status == s for r in snapshot.slos) for s in (OK, BREACH, UNKNOWN)}
    lines.append("")
    lines.append(f"SLOs: {counts[OK]} ok, {counts[BREACH]} breached, {counts[UNKNOWN]} unknown")
    samples = _sample_notes(snapshot.measures)
    if samples:
        lines.append("sampled:")
        lines += [f"  {view}: {'; '.join(notes)}" for view, notes in samples.items()]
    if snapshot.unreachable:
        lines.append("unreachable: " + ", ".join(snapshot.unreachable))
    lines += [f"note: {n}" for n in snapshot.notes]
    lines += [f"note: {n}" for n in _measure_notes(snapshot.measures)]
    return "\n".join(lines) + "\n"


def _sample_notes(measures: tuple[Measure, ...]) -> dict[str, list[str]]:
    """view -> the distinct notes of its sampled measures (how many rows each saw)."""
    out: dict[str, list[str]] = {}
    for m in measures:
        if m.sample is not None and m.note and m.note not in out.setdefault(m.view, []):
            out[m.view].append(m.note)
    return {view: notes for view, notes in out.items() if notes}


def _measure_notes(measures: tuple[Measure, ...]) -> list[str]:
    """Why measures are missing, and the notes that qualify a value (e.g. the dev broker's
    undercounted end offsets), once each."""
    seen: dict[str, None] = {}
    for m in measures:
        if m.sample is None and m.note and (m.value is None or "undercount" in m.note):
            seen.setdefault(f"{m.view} {m.measure}: {m.note}" if m.value is None else m.note, None)  # fmt: skip
    return list(seen)


def failing(snapshot: Snapshot) -> list[SloResult]:
    """The SLOs `check` fails on: the breached ones (a view no run ever wrote is
    infinitely old, so it breaches too)."""
    return [r for r in snapshot.slos if r.status == BREACH]


def check_lines(snapshot: Snapshot) -> list[str]:
    """One line per failing SLO: ``BREACH <slo> <view> <measure>: <detail>``."""
    out = []
    for r in failing(snapshot):
        detail = r.detail or f"target {_bound(r)}"
        out.append(f"BREACH {r.slo} ({r.view} {r.measure}): {detail}")
    return out
