"""SLO file loading (targets from the views' tags, errors naming file and field) and judging."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from monitoring import model as m
from monitoring.slo import (
    SLOS_FILE,
    Slo,
    declared_view_targets,
    judge,
    load_slos,
    parse_duration,
    view_targets,
)
from towerline.core.contracts import FRESHNESS_TAG, PIN_ENGAGEMENT, USER_PROFILE
from towerline.core.errors import InputError
from towerline.core.featurestore import apply_repo, open_store, record_tag

DAY_PLUS = 26 * 3600.0


@pytest.fixture(scope="module")
def declared() -> dict[str, float]:
    return declared_view_targets()


def test_shipped_slos_take_the_declared_tags(declared: dict[str, float]) -> None:
    assert declared[USER_PROFILE] == DAY_PLUS and declared[PIN_ENGAGEMENT] == 1.0
    slos = {s.name: s for s in load_slos(None, declared)}
    assert slos["user_profile_run_age"].target == DAY_PLUS
    assert slos["pin_engagement_pipeline_freshness"].target == 1.0
    assert slos["user_realtime_seq_event_lag"].target == 60.0  # "60s" in the file
    assert slos["version_skew"].for_s == 600.0 and slos["version_skew"].target == 0.0
    assert slos["host_up"].comparison == "min" and slos["corpus_age"].severity == "ticket"
    # Every batch view's run age and every stream view's freshness is covered.
    covered = {(s.view, s.measure) for s in slos.values()}
    for view in ("user_history_state", "user_profile", "pin_profile"):
        assert (view, m.RUN_AGE) in covered
    for view in ("user_realtime_seq", "pin_engagement"):
        assert {(view, m.PIPELINE_FRESHNESS_P99), (view, m.LAG_EVENT_TIME)} <= covered


def test_a_changed_tag_in_a_real_store_moves_the_default_target(tmp_path: Path) -> None:
    store = open_store(online="sqlite", project=f"slo_{uuid.uuid4().hex[:8]}", data_dir=tmp_path)
    apply_repo(store)
    assert record_tag(store, USER_PROFILE, FRESHNESS_TAG, "3600")
    targets = view_targets(store)
    assert targets[USER_PROFILE] == 3600.0 and targets["pin_profile"] == DAY_PLUS
    slos = {s.name: s for s in load_slos(None, targets)}
    assert slos["user_profile_run_age"].target == 3600.0
    assert slos["pin_profile_run_age"].target == DAY_PLUS
    # An explicit target in the file wins over the tag.
    assert slos["user_realtime_seq_data_age"].target == 300.0


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "slos.yml"
    path.write_text(body)
    return path


GOOD = """\
slos:
  - name: lag
    view: pin_engagement
    measure: lag_seconds
    comparison: max
    target: 2m
    for: 30s
    description: behind
"""


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ("slos: [name: x\n", ("line", "not valid YAML")),
        ("other: 1\n", ("'slos'",)),
        (GOOD.replace("lag_seconds", "lag_minutes"), ("'measure'", "lag_minutes")),
        (GOOD.replace("    view: pin_engagement\n", ""), ("slo 'lag'", "'view'", "missing")),
        (GOOD.replace("pin_engagement", "pin_engagment"), ("'view'", "pin_engagment")),
        (GOOD.replace("max", "most"), ("'comparison'", "most")),
        (GOOD.replace("30s", "soon"), ("'for'", "soon")),
        (GOOD.replace("2m", "[1]"), ("'target'", "number")),
        (
            GOOD.replace("    target: 2m\n", "").replace("pin_engagement", "index"),
            ("'target'", "index", FRESHNESS_TAG),
        ),  # fmt: skip
        (GOOD + "    severity: loud\n", ("'severity'", "loud")),
        (GOOD + "    owner: me\n", ("unknown field 'owner'",)),
        (GOOD + GOOD.removeprefix("slos:\n"), ("'lag' is used twice",)),
        (GOOD.replace("name: lag", "name: Lag-1"), ("'name'", "lower_snake_case")),
    ],
)
def test_a_bad_slo_file_is_an_input_error_naming_file_and_field(
    tmp_path: Path, declared: dict[str, float], body: str, needles: tuple[str, ...]
) -> None:
    assert load_slos(_write(tmp_path, GOOD), declared)[0].target == 120.0
    path = _write(tmp_path, body)
    with pytest.raises(InputError) as caught:
        load_slos(path, declared)
    assert str(path) in str(caught.value)
    for needle in needles:
        assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_slo_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read SLO file .*nope.yml"):
        load_slos(tmp_path / "nope.yml", {})


def test_the_shipped_file_is_found_without_a_path() -> None:
    assert SLOS_FILE.is_file() and SLOS_FILE.parent.name == "monitoring"


def test_durations() -> None:
    assert [parse_duration(v, "x") for v in ("0s", "90s", "10m", "26h", "1d", 5, "250ms")] == [
        0.0,
        90.0,
        600.0,
        93600.0,
        86400.0,
        5.0,
        0.25,
    ]
    with pytest.raises(InputError, match="x must be a duration"):
        parse_duration(-1, "x")


LAG = Slo("lag", PIN_ENGAGEMENT, m.LAG_EVENT_TIME, "max", 60.0, 60.0, "behind")
COVERAGE = Slo("coverage", "user_history_state", m.STATES_COVERAGE, "min", 0.95, 0.0, "few")


def _lag(partition: str, value: float | None, note: str = "") -> m.Measure:
    return m.Measure(PIN_ENGAGEMENT, m.LAG_EVENT_TIME, value, job="streams", partition=partition, note=note)  # fmt: skip


def test_the_worst_partition_decides_and_is_named() -> None:
    measures = [_lag("0", 3.0), _lag("1", 90.0), _lag("2", 75.0), _lag("3", None, "no offsets")]
    (result,) = judge([LAG], measures)
    assert (result.status, result.worst, result.target) == (m.BREACH, 90.0, 60.0)
    assert "partition 1" in result.detail and "1m30s" in result.detail
    assert "2 of 4 breach" in result.detail


def test_all_within_target_is_ok_and_an_unmeasured_partition_is_unknown_not_ok() -> None:
    (ok,) = judge([LAG], [_lag("0", 3.0), _lag("1", 59.0)])
    assert (ok.status, ok.worst) == (m.OK, 59.0)
    (unknown,) = judge([LAG], [_lag("0", 3.0), _lag("1", None, "worker never applied a record")])
    assert unknown.status == m.UNKNOWN
    assert "partition 1" in unknown.detail and "worker never applied a record" in unknown.detail


def test_no_value_at_all_is_unknown_and_says_why() -> None:
    measures = [m.Measure("user_history_state", m.STATES_COVERAGE, None, note="Redis unreachable")]
    (result,) = judge([COVERAGE, LAG], measures)[:1]
    assert (result.status, result.worst) == (m.UNKNOWN, None)
    assert "Redis unreachable" in result.detail
    (missing,) = judge([LAG], measures)
    assert (
        missing.status == m.UNKNOWN and "no measure of pin_engagement lag_seconds" in missing.detail
    )


def test_min_slos_breach_below_target_and_other_views_do_not_count() -> None:
    other_view = m.Measure("user_profile", m.STATES_COVERAGE, 0.1)
    low = m.Measure("user_history_state", m.STATES_COVERAGE, 0.8, job="batch encode", sample=1000)
    (result,) = judge([COVERAGE], [other_view, low])
    assert (result.status, result.worst) == (m.BREACH, 0.8)
    assert "80%" in result.detail and ">= 95%" in result.detail
    (fine,) = judge(
        [COVERAGE], [other_view, m.Measure("user_history_state", m.STATES_COVERAGE, 0.97)]
    )
    assert fine.status == m.OK


def test_nan_is_not_a_measurement() -> None:
    (result,) = judge([LAG], [_lag("0", float("nan"), "histogram empty")])
    assert result.status == m.UNKNOWN and "histogram empty" in result.detail
