"""The freshness report's pure parts: bins, scales, units, escaping, empty inputs, and the
page as a whole (self-contained, deterministic, one plot per view)."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from html.parser import HTMLParser

import pytest

from monitoring import model, report, report_views, svg, svg_hosts
from monitoring import report_units as units
from monitoring.model import Measure, SloResult, Snapshot
from towerline.core import contracts

T0 = dt.datetime(2026, 11, 27, 7, 0, tzinfo=dt.UTC)
FEATURE_VIEWS = (*contracts.BATCH_VIEWS, *contracts.STREAM_VIEWS)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.plot_views: Counter[str] = Counter()
        self.plot_kinds: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        a = dict(attrs)
        if tag == "svg" and a.get("class") == "plot":
            self.plot_views[a.get("data-view") or ""] += 1
            self.plot_kinds.append(a.get("data-kind") or "")


def _parse(page: str) -> _Tags:
    tags = _Tags()
    tags.feed(page)
    return tags


def _snapshot(taken_at: dt.datetime = T0, lag: float = 0.4, version: float = 7.0) -> Snapshot:
    measures = [
        Measure(contracts.USER_HISTORY_STATE, model.RUN_AGE, 5 * 3600.0, job="batch encode"),
        Measure(contracts.USER_PROFILE, model.RUN_AGE, 30 * 3600.0, job="load-profiles"),
        Measure(contracts.PIN_PROFILE, model.RUN_AGE, None, note="no successful run in the ledger"),
        Measure(model.INDEX, model.INDEX_AGE, 3 * 3600.0),
        Measure(model.SERVING, model.HOST_VERSION, version, host="a:8080"),
        Measure(model.SERVING, model.HOST_VERSION, 6.0, host="b:8080"),
        Measure(model.SERVING, model.VERSION_SKEW, version - 6.0),
    ]
    for view in contracts.STREAM_VIEWS:
        for p in range(2):
            measures.append(Measure(view, model.LAG_EVENT_TIME, lag * (p + 1), partition=str(p)))
            measures.append(Measure(view, model.LAG_OFFSETS, 10.0 * p, partition=str(p)))
    slos = (
        SloResult("profile_age", contracts.USER_PROFILE, model.RUN_AGE, 26 * 3600.0, "max", model.BREACH, 30 * 3600.0),
        SloResult("rt_lag", contracts.USER_REALTIME_SEQ, model.LAG_EVENT_TIME, 1.0, "max", model.OK, lag * 2),
    )  # fmt: skip
    ages = {v: (1.0, 30.0, 400.0, 7200.0, 90000.0) for v in FEATURE_VIEWS}
    return Snapshot(taken_at=taken_at, measures=tuple(measures), slos=slos, ages=ages)


def _history(n: int = 6) -> list[Snapshot]:
    return [
        _snapshot(T0 - dt.timedelta(minutes=30 * i), lag=0.3 + i, version=6.0 + (i < 3))
        for i in range(n, 0, -1)
    ]


# --- units -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.35, "350 ms"),
        (0.0, "0 s"),
        (1.0, "1 s"),
        (42.4, "42 s"),
        (90.0, "90 s"),
        (300.0, "5 min"),
        (5400.0, "90 min"),
        (3600.0, "1 h"),
        (93600.0, "26 h"),
        (86400.0, "1 d"),
        (3.5 * 86400, "3.5 d"),
        (-2.0, "−2 s"),
        (None, "—"),
    ],
)
def test_duration_reads_in_its_own_unit(seconds: float | None, text: str) -> None:
    assert units.duration(seconds) == text


def test_measure_values_use_the_unit_in_their_name() -> None:
    assert units.measure_value(model.STATES_COVERAGE, 0.9823) == "98.2 %"
    assert units.measure_value(model.SERVED_HAS_LATEST, 0.0) == "no"
    assert units.measure_value(model.HOST_VERSION, 7.0) == "v7"
    assert units.measure_value(model.VERSION_SKEW, 1.0) == "1 version"
    assert units.measure_value(model.BEHIND_BUILT, 2.0) == "2 versions"
    assert units.measure_value(model.LAG_OFFSETS, 12345.0) == "12,345 offsets"
    assert units.measure_value(model.RUN_AGE, 93600.0) == "26 h"
    assert units.measure_value(model.RUN_AGE, None) == "—"
    assert units.measure_label(model.ROW_AGE_P99) == "row age p99"


def test_duration_ticks_are_round_and_labelled_in_one_unit() -> None:
    ticks = units.linear_ticks(29 * 3600, durations=True)
    assert ticks[0] == 0 and ticks[-1] >= 29 * 3600 and len(ticks) <= 6
    assert all(t % 3600 == 0 for t in ticks)
    labels = units.duration_axis(ticks)
    assert labels[0] == "0" and all(label.endswith(" h") for label in labels[1:]), labels
    assert units.duration_axis([0, 0.25, 0.5]) == ["0", "250 ms", "500 ms"]


def test_axis_counts_are_compact() -> None:
    assert [units.compact(n) for n in (950, 1000, 12_500, 200_000, 1_500_000)] == [
        "950",
        "1k",
        "12k",
        "200k",
        "1.5M",
    ]


def test_count_ticks_are_whole_round_numbers() -> None:
    assert units.linear_ticks(185, durations=False, most=4) == [0, 50, 100, 150, 200]
    assert units.linear_ticks(3, durations=False) == [0, 1, 2, 3]


def test_time_ticks_are_aligned_inside_the_span() -> None:
    start = T0.timestamp() - 86400 + 123
    ticks, fmt = units.time_ticks(start, T0.timestamp())
    assert ticks and all(start <= t <= T0.timestamp() for t in ticks)
    step = ticks[1] - ticks[0]
    assert all(t % step == 0 for t in ticks) and len(ticks) <= 6
    assert "%d" in fmt  # the span crosses midnight: labels carry the date


# --- histogram bins and scales ---------------------------------------------------------


def test_age_edges_cover_seconds_to_days_in_round_steps() -> None:
    seconds = svg.age_edges([0.3, 0.8, 4.0], target=1.0)
    assert seconds[0] <= 0.3 and seconds[-1] > 4.0 and len(seconds) - 1 >= svg.MIN_BINS
    days = svg.age_edges([2 * 86400, 20 * 86400], target=26 * 3600)
    assert days[0] <= 26 * 3600 and days[-1] > 20 * 86400
    assert set(days) <= set(svg.AGE_EDGES)
    assert [units.duration(e) for e in days][:3] == ["1 d", "2 d", "4 d"]


def test_age_edges_start_at_zero_below_the_smallest_edge() -> None:
    assert svg.age_edges([0.01, 0.2])[0] == 0.0


def test_bin_counts_count_every_value_once() -> None:
    edges = [1.0, 2.0, 5.0, 10.0]
    assert svg.bin_counts([-1.0, 1.0, 1.5, 2.0, 4.9, 10.0, 1e9], edges) == [3, 2, 2]


def test_edge_position_is_logarithmic_within_a_bin() -> None:
    edges = [0.0, 1.0, 4.0, 16.0]
    assert svg.edge_position(2.0, edges) == pytest.approx(1.5)
    assert svg.edge_position(0.5, edges) == pytest.approx(0.5)  # linear in a bin from 0
    assert svg.edge_position(100.0, edges) == 3.0
    assert svg.edge_position(-1.0, edges) == 0.0


def test_bars_past_a_row_age_target_are_red_only_when_it_is_a_row_age_slo() -> None:
    ages = [1.0, 2.0, 60.0, 3600.0]
    breaching = svg.histogram("v", ages, target=30.0, target_label="t", beyond_breaches=True)
    marking = svg.histogram("v", ages, target=30.0, target_label="t", beyond_breaches=False)
    assert svg.BAR_BEYOND in breaching and svg.BAR_BEYOND not in marking
    assert breaching.count('class="target"') == 1


def test_a_missing_value_breaks_the_line() -> None:
    series = [svg.Series("p0", (1.0, 2.0, None, 3.0, 4.0))]
    plot = svg.lines("v", "lag", [0, 60, 120, 180, 240], series, durations=True, y_title="lag")
    path = re.search(r'<path class="series" d="([^"]+)"', plot)
    assert path and path.group(1).count("M") == 2 and path.group(1).count("L") == 2


def test_long_histories_are_thinned_keeping_the_spikes() -> None:
    times = [float(i * 60) for i in range(1000)]
    values = [0.5] * 1000
    values[501] = 900.0
    values[700] = None
    thin_times, (thin,) = svg.downsample(times, [svg.Series("p0", tuple(values))], most=100)
    assert len(thin_times) == len(thin.values) <= 100
    assert max(v for v in thin.values if v is not None) == 900.0
    assert thin_times[-1] == times[-1]
    plot = svg.lines(
        "v", "lag", times, [svg.Series("p0", tuple(values))], durations=True, y_title="lag"
    )
    assert plot.count(" L") + plot.count("M") <= 400


def test_a_single_point_in_time_still_draws() -> None:
    plot = svg.lines(
        "v", "lag", [T0.timestamp()], [svg.Series("p0", (5.0,))], durations=True, y_title="lag"
    )
    assert "<circle" in plot and "nan" not in plot.lower()


def test_hosts_behind_the_newest_version_are_highlighted() -> None:
    hosts = report_views.hosts_of(_snapshot(version=7.0))
    assert [(h.name, h.version) for h in hosts] == [("a:8080", 7), ("b:8080", 6)]
    plot = svg_hosts.host_versions(model.SERVING, [*hosts, svg_hosts.Host("c:8080", None, False)])
    assert plot.count('class="host-behind"') == 1 and "1 behind" in plot
    assert "down / no version" in plot


def test_sample_size_is_said_as_n_of_m() -> None:
    m = Measure("v", model.ROW_AGE_P50, 3.0, note="sample of 1000 of 120000 rows", sample=1000)
    snap = Snapshot(taken_at=T0, measures=(m,), ages={"v": (3.0,)})
    assert report_views.sample_phrase(snap, "v") == "sample 1,000 of 120,000 rows"
    bare = Snapshot(taken_at=T0, measures=(Measure("v", model.ROW_AGE_P50, 3.0, sample=50),))
    assert report_views.sample_phrase(bare, "v").startswith("sample of 50 rows")


# --- the page --------------------------------------------------------------------------


def test_page_has_one_histogram_per_feature_view_and_slo_status_first() -> None:
    page = report.render(_snapshot(), _history())
    tags = _parse(page)
    kinds = Counter(tags.plot_kinds)
    assert kinds["age-histogram"] == len(FEATURE_VIEWS)
    for view in FEATURE_VIEWS:
        assert tags.plot_views[view] >= 1
    assert kinds["lag-seconds"] == kinds["lag-offsets"] == len(contracts.STREAM_VIEWS)
    assert page.index('id="slos"') < page.index('id="view-user_history_state"')
    # breached first in the SLO table, coloured as such
    assert page.index("profile_age") < page.index("rt_lag")
    assert '<span class="pill breach">breach</span>' in page
    assert "1 SLO breached" in page


def test_page_is_self_contained() -> None:
    page = report.render(_snapshot(), _history())
    tags = _parse(page)
    assert tags.tags["link"] == tags.tags["img"] == tags.tags["iframe"] == 0
    assert "@import" not in page and "url(" not in page and " src=" not in page
    assert set(re.findall(r"https?://[^\s\"'<]+", page)) <= {"http://www.w3.org/2000/svg"}


def test_page_is_deterministic_and_independent_of_history_order() -> None:
    snapshot, history = _snapshot(), _history()
    page = report.render(snapshot, history)
    assert page == report.render(snapshot, list(reversed(history)))
    assert page == report.render(snapshot, [*history, snapshot])  # history holding it already
    assert "2026-11-27 07:00:00 UTC" in page


def test_every_text_is_escaped() -> None:
    evil = "<script>alert('x')</script>"
    snap = Snapshot(
        taken_at=T0,
        measures=(
            Measure(evil, model.ROW_AGE_P50, 5.0, note=evil, sample=3, job=evil),
            Measure(evil, model.LAG_EVENT_TIME, 2.0, partition=evil),
            Measure(model.SERVING, model.HOST_VERSION, 3.0, host=evil),
        ),
        slos=(SloResult(evil, evil, model.ROW_AGE_P50, 1.0, "max", model.BREACH, 5.0, evil),),
        unreachable=(evil,),
        notes=(evil,),
        ages={evil: (1.0, 2.0, 5.0)},
    )
    page = report.render(snap, [])
    tags = _parse(page)
    assert tags.tags["script"] == 0 and "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert tags.plot_views[evil] >= 1  # the attribute round-trips to the real name


def test_empty_history_and_empty_snapshot_give_no_data_figures() -> None:
    page = report.render(Snapshot(taken_at=T0, measures=()), [])
    tags = _parse(page)
    for view in FEATURE_VIEWS:
        assert tags.plot_views[view] >= 1
    assert all(kind.endswith("empty") for kind in tags.plot_kinds), tags.plot_kinds
    assert "no row ages sampled for this view" in page
    assert "no lag in 1 snapshot(s)" in page
    assert "no SLO results in this snapshot" in page


def test_a_snapshot_without_history_still_plots_its_own_point() -> None:
    page = report.render(_snapshot(), [])
    kinds = _parse(page).plot_kinds
    assert "lag-seconds" in kinds and "lag-seconds empty" not in kinds


def test_unmeasured_values_are_shown_as_such_not_as_zero() -> None:
    page = report.render(_snapshot(), [])
    row = re.search(r'<tr class="unmeasured">.*?</tr>', page)
    assert (
        row and "pin_profile" in row.group(0) and "no successful run in the ledger" in row.group(0)
    )
    assert 'title="not measured">—<' in row.group(0)
