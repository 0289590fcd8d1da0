"""The freshness report in a real browser: headless Chromium (Debian package ``chromium``)
loads the written page from disk, a screenshot is taken and decoded, and the DOM after
load holds one drawn plot per feature view.

Run as a script to refresh the README's screenshot:
``.venv/bin/python tests/monitoring/test_report_browser.py docs/freshness-report.png``
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from monitoring import model, report
from monitoring.model import Measure, SloResult, Snapshot
from towerline.core import contracts

CHROMIUM = "/usr/bin/chromium"
TAKEN_AT = dt.datetime(2026, 11, 27, 7, 0, tzinfo=dt.UTC)
H, D = 3600.0, 86400.0
HOSTS = ("serve-a:8080", "serve-b:8080", "serve-c:8080")
STOPPED_AT = TAKEN_AT - dt.timedelta(hours=1, minutes=20)  # the worker of partitions 2, 3


def _since(t: dt.datetime, hour: float) -> float:
    """Seconds since the last time the clock read ``hour`` (UTC) at or before t: a daily job."""
    day_start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    last = day_start + dt.timedelta(hours=hour)
    if last > t:
        last -= dt.timedelta(days=1)
    return (t - last).total_seconds()


def _measures(t: dt.datetime, rng: random.Random) -> list[Measure]:
    """What the monitor would have measured at t in a day with a few things going wrong."""
    out = [
        Measure(contracts.USER_HISTORY_STATE, model.RUN_AGE, _since(t, 2.2), job="batch encode"),
        # load-profiles failed yesterday: its last success is from the day before.
        Measure(contracts.USER_PROFILE, model.RUN_AGE, _since(t, 23.8) + (D if t.hour < 23 else 0.0),
                job="load-profiles"),
        Measure(contracts.PIN_PROFILE, model.RUN_AGE, _since(t, 23.9), job="load-profiles"),
        Measure(model.INDEX, model.INDEX_AGE, _since(t, 3.5)),
        Measure(model.INDEX, model.CORPUS_AGE, _since(t, 3.5) + 2400),
    ]  # fmt: skip
    for view in contracts.STREAM_VIEWS:
        for p in range(4):
            stopped = view == contracts.USER_REALTIME_SEQ and p >= 2 and t >= STOPPED_AT
            # partition 3 had been idle for 5 min when its worker stopped
            lag = (
                (t - STOPPED_AT).total_seconds() + 300.0 * (p - 2)
                if stopped
                else rng.uniform(0.15, 0.7)
            )
            offsets = lag * 35 + rng.randint(0, 20) if stopped else rng.randint(0, 40)
            note = "dev broker undercounts end offsets"
            out.append(Measure(view, model.LAG_EVENT_TIME, lag, partition=str(p)))
            out.append(
                Measure(view, model.LAG_OFFSETS, float(offsets), partition=str(p), note=note)
            )
        out.append(Measure(view, model.PIPELINE_FRESHNESS_P50, rng.uniform(0.08, 0.15)))
        out.append(Measure(view, model.PIPELINE_FRESHNESS_P99, rng.uniform(0.3, 0.6)))
        out.append(Measure(view, model.DATA_AGE, rng.uniform(0.2, 0.9)))
    published_v7 = TAKEN_AT.replace(hour=3, minute=40)
    for host in HOSTS:
        version = 7 if t >= published_v7 and host != HOSTS[2] else 6
        out.append(Measure(model.SERVING, model.HOST_VERSION, float(version), host=host))
        out.append(Measure(model.SERVING, model.HOST_UP, 1.0, host=host))
    return out


def realistic() -> tuple[Snapshot, list[Snapshot]]:
    """A morning report: a day of history every 30 min, a stopped stream worker, a failed
    profile load and one serving host left on the previous version."""
    rng = random.Random(10)
    history = [
        Snapshot(taken_at=t, measures=tuple(_measures(t, rng)))
        for t in (TAKEN_AT - dt.timedelta(minutes=30 * i) for i in range(48, 0, -1))
    ]
    ages = {
        contracts.USER_HISTORY_STATE: [
            _since(TAKEN_AT, 0) + rng.uniform(-600, 600) for _ in range(900)
        ]
        + [_since(TAKEN_AT, 0) + D for _ in range(100)],
        contracts.USER_PROFILE: [rng.lognormvariate(math.log(20 * D), 0.8) for _ in range(1000)],
        contracts.PIN_PROFILE: [rng.lognormvariate(math.log(9 * D), 0.9) for _ in range(1000)],
        contracts.USER_REALTIME_SEQ: [
            rng.lognormvariate(math.log(2 * H), 2.2) for _ in range(1000)
        ],
        contracts.PIN_ENGAGEMENT: [rng.lognormvariate(math.log(25 * 60), 2.0) for _ in range(800)],
    }
    sizes = {contracts.PIN_ENGAGEMENT: 48_210, contracts.PIN_PROFILE: 50_000}
    measures = _measures(TAKEN_AT, rng)
    for view, values in ages.items():
        ordered = sorted(values)
        total = sizes.get(view, 120_000)
        note = f"sample of {len(values)} of {total} rows"
        for name, q in ((model.ROW_AGE_P50, 0.5), (model.ROW_AGE_P99, 0.99)):
            value = ordered[math.ceil(q * len(ordered)) - 1]
            measures.append(Measure(view, name, value, note=note, sample=len(values)))
    measures += [
        Measure(contracts.USER_HISTORY_STATE, model.SERVED_HAS_LATEST, 1.0),
        Measure(contracts.USER_HISTORY_STATE, model.STATES_COVERAGE, 0.982, note="sample of 1000 of 120000 active users", sample=1000),
        Measure(model.INDEX, model.BEHIND_BUILT, 0.0),
        Measure(model.INDEX, model.BEHIND_REGISTERED, 0.0),
        Measure(model.SERVING, model.VERSION_SKEW, 1.0),
    ]  # fmt: skip
    value = {(m.view, m.measure): m.value for m in measures if not m.partition and not m.host}
    slos = (
        SloResult("user_history_state_run_age", contracts.USER_HISTORY_STATE, model.RUN_AGE, 26 * H, "max",
                  model.OK, value[contracts.USER_HISTORY_STATE, model.RUN_AGE]),
        SloResult("user_history_state_coverage", contracts.USER_HISTORY_STATE, model.STATES_COVERAGE, 0.95,
                  "min", model.OK, 0.982),
        SloResult("user_profile_run_age", contracts.USER_PROFILE, model.RUN_AGE, 26 * H, "max", model.BREACH,
                  value[contracts.USER_PROFILE, model.RUN_AGE],
                  "load-profiles of 2026-11-26 failed; last success 2026-11-25 23:48"),
        SloResult("pin_profile_run_age", contracts.PIN_PROFILE, model.RUN_AGE, 26 * H, "max", model.OK,
                  value[contracts.PIN_PROFILE, model.RUN_AGE]),
        SloResult("user_realtime_seq_lag", contracts.USER_REALTIME_SEQ, model.LAG_EVENT_TIME, 1.0, "max",
                  model.BREACH, (TAKEN_AT - STOPPED_AT).total_seconds() + 300.0, "partitions 2, 3"),
        SloResult("user_realtime_seq_pipeline", contracts.USER_REALTIME_SEQ, model.PIPELINE_FRESHNESS_P99, 1.0,
                  "max", model.OK, value[contracts.USER_REALTIME_SEQ, model.PIPELINE_FRESHNESS_P99]),
        SloResult("pin_engagement_lag", contracts.PIN_ENGAGEMENT, model.LAG_EVENT_TIME, 1.0, "max", model.OK, 0.66),
        SloResult("pin_engagement_pipeline", contracts.PIN_ENGAGEMENT, model.PIPELINE_FRESHNESS_P99, 1.0, "max",
                  model.UNKNOWN, None, "worker metrics at 127.0.0.1:9109 did not answer"),
        SloResult("index_age", model.INDEX, model.INDEX_AGE, 30 * H, "max", model.OK, value[model.INDEX, model.INDEX_AGE]),
        SloResult("version_skew", model.SERVING, model.VERSION_SKEW, 0.0, "max", model.BREACH, 1.0,
                  "serve-c:8080 serves v6, the others v7"),
    )  # fmt: skip
    snapshot = Snapshot(
        taken_at=TAKEN_AT,
        measures=tuple(measures),
        slos=slos,
        unreachable=("stream worker metrics http://127.0.0.1:9109/metrics",),
        ages={view: tuple(values) for view, values in ages.items()},
    )
    return snapshot, history


def chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a throw-away profile; its whole process group is killed
    when it overruns."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install the Debian package `chromium` (make setup)",
            pytrace=False,
        )
    with tempfile.TemporaryDirectory(prefix="towerline-chromium-") as profile:
        command = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage",
                   f"--user-data-dir={profile}", *args]  # fmt: skip
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(
                f"chromium did not finish within {timeout} s: {' '.join(args)}", pytrace=False
            )
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2000) -> None:
    done = chromium(
        f"--screenshot={png}",
        f"--window-size={width},{height}",
        "--run-all-compositor-stages-before-draw",  # no tile left unpainted in a tall window
        page.as_uri(),
    )
    assert png.exists(), (
        f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    )


class _Plots(HTMLParser):
    """Counts, per data-view, the svg.plot elements and the shapes drawn inside them."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: Counter[str] = Counter()
        self.shapes: Counter[str] = Counter()
        self.kinds: dict[str, list[str]] = {}
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg" and "plot" in (a.get("class") or "").split():
            self._inside = a.get("data-view") or ""
            self.plots[self._inside] += 1
            self.kinds.setdefault(self._inside, []).append(a.get("data-kind") or "")
        elif self._inside is not None and tag in ("rect", "path", "polyline", "circle", "line"):
            self.shapes[self._inside] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._inside = None


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    snapshot, history = realistic()
    page = tmp_path / "report.html"
    page.write_text(report.render(snapshot, history), encoding="utf-8")

    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<svg" in dom.stdout, "the DOM after load holds no SVG"
    plots = _Plots()
    plots.feed(dom.stdout)
    for view in (*contracts.BATCH_VIEWS, *contracts.STREAM_VIEWS):
        assert plots.plots[view] >= 1, f"no svg.plot for {view}: {dict(plots.plots)}"
        assert "age-histogram" in plots.kinds[view]
        assert not any("empty" in k for k in plots.kinds[view]), (view, plots.kinds[view])
        assert plots.shapes[view] >= 5, f"{view}: only {plots.shapes[view]} shapes drawn"
    for view in contracts.STREAM_VIEWS:
        assert {"lag-seconds", "lag-offsets"} <= set(plots.kinds[view])
    assert plots.plots[model.SERVING] >= 1 and plots.plots[model.INDEX] >= 1

    png = tmp_path / "report.png"
    screenshot(page, png)
    with Image.open(png) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1280, 2000)
        small = rgb.resize((320, 500))
        colors = small.getcolors(maxcolors=1 << 16) or []
        ink = sum(n for n, c in colors if sum(c) < 600)  # clearly darker than the page
        red = sum(n for n, (r, g, b) in colors if r > 180 and g < 110 and b < 110)
    assert len(colors) > 200, f"screenshot looks blank: {len(colors)} colours"
    assert ink > 0.02 * 320 * 500, f"screenshot has almost no ink: {ink} dark pixels"
    assert red > 0, "the breached SLOs are not drawn in red"


def test_empty_report_renders_no_data_figures(tmp_path: Path) -> None:
    """A monitor that measured nothing still gives a page with one framed figure per view."""
    snapshot = Snapshot(taken_at=TAKEN_AT, measures=(), unreachable=("redis://127.0.0.1:6379",))
    page = tmp_path / "empty.html"
    page.write_text(report.render(snapshot, []), encoding="utf-8")
    dom = chromium("--dump-dom", page.as_uri())
    plots = _Plots()
    plots.feed(dom.stdout)
    for view in (*contracts.BATCH_VIEWS, *contracts.STREAM_VIEWS):
        assert plots.plots[view] >= 1 and all("empty" in k for k in plots.kinds[view])
        assert plots.shapes[view] >= 1
    assert "no data" in dom.stdout and "redis://127.0.0.1:6379" in dom.stdout


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/freshness-report.png")
    width, height = (int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "1280x2585").split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(report.render(*realistic()), encoding="utf-8")
        shot = Path(tmp) / "shot.png"
        screenshot(page, shot, width, height)
        with Image.open(shot) as image:
            # A palette PNG keeps the screenshot small enough for the README.
            image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(
                out, optimize=True
            )
    print(out, out.stat().st_size, "bytes")
