"""What the freshness monitor measures: the contract between collecting, SLOs, Prometheus,
the history file and the report.

A ``Measure`` is one number about one thing (a feature view, the index, the serving
hosts), with the labels that say which job, partition or host it is about. Its name
carries its unit (``_seconds``, ``_ratio``, ``_offsets``, ``_versions``, ``_bool``). A
measure that could not be taken has ``value=None`` and says why in ``note``; it is never
reported as 0.

Prometheus exposes every measure as ``towerline_freshness_value`` with labels ``view``,
``measure``, ``job``, ``partition``, ``host`` (empty when not applicable), and every SLO as
``towerline_slo_target`` / ``towerline_slo_ok`` (1 holds, 0 breached, absent: unmeasured)
with labels ``slo``, ``view``, ``measure``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# Targets that are not a feature view.
INDEX, SERVING = "index", "serving"

# Measure names (unit last).
RUN_AGE = "run_age_seconds"  # batch views: now - end of the last successful run (ledger)
SERVED_HAS_LATEST = "served_states_latest_partition_bool"  # 1: served version has dt=latest
STATES_COVERAGE = "served_states_coverage_ratio"  # share of sampled active users with a row
PIPELINE_FRESHNESS_P50 = "pipeline_freshness_p50_seconds"  # write time - event time
PIPELINE_FRESHNESS_P99 = "pipeline_freshness_p99_seconds"
DATA_AGE = "data_age_seconds"  # now - newest event time seen in the view
LAG_OFFSETS = "lag_offsets"  # per partition: end offset - applied offset
LAG_EVENT_TIME = "lag_seconds"  # per partition: now - newest applied event time
ROW_AGE_P50 = "row_age_p50_seconds"  # over the sampled rows: now - row event time
ROW_AGE_P99 = "row_age_p99_seconds"
INDEX_AGE = "index_age_seconds"  # now - built_at of the build serving.json names
CORPUS_AGE = "corpus_age_seconds"  # now - the served index's corpus snapshot time
BEHIND_BUILT = "served_behind_built_versions"  # newest built version - served version
BEHIND_REGISTERED = "served_behind_registered_versions"  # newest registered - served
HOST_VERSION = "host_model_version"  # per host: the version number it serves
HOST_UP = "host_up_bool"  # per host: 1 when its /metrics answered
VERSION_SKEW = "version_skew_versions"  # max - min version number across answering hosts

OK, BREACH, UNKNOWN = "ok", "breach", "unknown"


@dataclass(frozen=True)
class Measure:
    view: str  # a feature view, INDEX or SERVING
    measure: str  # one of the names above
    value: float | None  # None: could not be measured (``note`` says why)
    job: str = ""
    partition: str = ""
    host: str = ""
    note: str = ""  # e.g. "sample of 1000 of 12000 rows", "dev broker undercounts end offsets"
    sample: int | None = None  # rows the value was computed from, when sampled

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.view, self.measure, self.job, self.partition, self.host)


@dataclass(frozen=True)
class SloResult:
    """One SLO judged against the measures it covers (every matching label set)."""

    slo: str
    view: str
    measure: str
    target: float
    comparison: str  # "max" (value must be <= target) or "min" (value must be >= target)
    status: str  # OK | BREACH | UNKNOWN
    worst: float | None  # the value that decided the status
    detail: str = ""  # which partition/host breached, or why it is unknown


@dataclass(frozen=True)
class Snapshot:
    """Everything one collection saw; appended to the history file as one JSON line."""

    taken_at: dt.datetime
    measures: tuple[Measure, ...]
    slos: tuple[SloResult, ...] = ()
    unreachable: tuple[str, ...] = ()  # sources that could not be read, named
    notes: tuple[str, ...] = field(default=())
    # view -> ages (seconds, now - row event time) of the sampled rows: the report's
    # histograms. Not written to the history file (it keeps measures only).
    ages: dict[str, tuple[float, ...]] = field(default_factory=dict)
