"""Freshness SLOs: the file that declares them, and judging measures against them.

An SLO names one measure of one view (``monitoring/slos.yml``) and a bound on it: ``max``
(the value must stay at or below the target, e.g. an age) or ``min`` (at or above, e.g. a
coverage). It covers every measure with that view and name, whatever its job, partition or
host, and the worst of them decides. An SLO without a ``target`` takes its view's
``freshness_target_s`` tag, so the views' declarations stay the one place a freshness target
is set. ``for`` is how long a breach must last before Prometheus pages; ``judge`` (and so
``towerline freshness check``) looks at one moment and ignores it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from monitoring import model as m
from towerline.core.contracts import FRESHNESS_TAG, VIEW_FEATURES
from towerline.core.errors import InputError

if TYPE_CHECKING:
    import feast

SLOS_FILE = Path(__file__).resolve().parent / "slos.yml"
COMPARISONS = ("max", "min")
SEVERITIES = ("page", "ticket")
MEASURES: tuple[str, ...] = (
    m.RUN_AGE,
    m.SERVED_HAS_LATEST,
    m.STATES_COVERAGE,
    m.PIPELINE_FRESHNESS_P50,
    m.PIPELINE_FRESHNESS_P99,
    m.DATA_AGE,
    m.LAG_OFFSETS,
    m.LAG_EVENT_TIME,
    m.ROW_AGE_P50,
    m.ROW_AGE_P99,
    m.INDEX_AGE,
    m.CORPUS_AGE,
    m.BEHIND_BUILT,
    m.BEHIND_REGISTERED,
    m.HOST_VERSION,
    m.HOST_UP,
    m.VERSION_SKEW,
)
VIEWS: tuple[str, ...] = (*VIEW_FEATURES, m.INDEX, m.SERVING)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_FIELDS = ("name", "view", "measure", "comparison", "target", "for", "severity", "description")


@dataclass(frozen=True)
class Slo:
    name: str  # lower_snake_case, unique; the alert is its CamelCase
    view: str  # a feature view, model.INDEX or model.SERVING
    measure: str  # one of MEASURES
    comparison: str  # "max": value <= target holds; "min": value >= target holds
    target: float
    for_s: float  # how long a breach lasts before it pages (Prometheus only)
    description: str
    severity: str = "page"  # "page": wake someone; "ticket": look at it today

    def holds(self, value: float) -> bool:
        return value <= self.target if self.comparison == "max" else value >= self.target


def load_slos(path: Path | None, view_targets: Mapping[str, float]) -> tuple[Slo, ...]:
    """The SLOs of ``path`` (None: the shipped ``monitoring/slos.yml``), in file order.

    ``view_targets`` maps a view to its ``freshness_target_s``; an SLO without a target takes
    its view's. Raises InputError naming the file and the field for anything unusable.
    """
    path = SLOS_FILE if path is None else path
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read SLO file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise InputError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("slos"), list) or not doc["slos"]:
        raise InputError(f"{path}: expected a mapping with a non-empty list under 'slos'")
    slos = tuple(_slo(path, i, raw, view_targets) for i, raw in enumerate(doc["slos"]))
    seen: set[str] = set()
    for slo in slos:
        if slo.name in seen:
            raise InputError(f"{path}: slos: name {slo.name!r} is used twice")
        seen.add(slo.name)
    return slos


def _slo(path: Path, i: int, raw: Any, view_targets: Mapping[str, float]) -> Slo:
    where = f"{path}: slos[{i}]"
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping with name, view, measure, comparison")
    name = raw.get("name")
    if isinstance(name, str):
        where = f"{path}: slo {name!r}"
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown field {unknown[0]!r}; fields: {', '.join(_FIELDS)}")
    for key in ("name", "view", "measure", "comparison"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise InputError(f"{where}: field {key!r} is missing or not a string")
    _one_of(where, "name", raw["name"], None)
    _one_of(where, "view", raw["view"], VIEWS)
    _one_of(where, "measure", raw["measure"], MEASURES)
    _one_of(where, "comparison", raw["comparison"], COMPARISONS)
    _one_of(where, "severity", raw.get("severity", "page"), SEVERITIES)
    return Slo(
        name=raw["name"],
        view=raw["view"],
        measure=raw["measure"],
        comparison=raw["comparison"],
        target=_target(where, raw, view_targets),
        for_s=parse_duration(raw.get("for", "0s"), f"{where}: field 'for'"),
        description=str(raw.get("description") or "").strip(),
        severity=raw.get("severity", "page"),
    )


def _one_of(where: str, key: str, value: Any, allowed: tuple[str, ...] | None) -> None:
    if allowed is None:
        if not _NAME.match(value):
            raise InputError(f"{where}: field {key!r} must be lower_snake_case, got {value!r}")
    elif value not in allowed:
        raise InputError(f"{where}: field {key!r} is {value!r}; one of {', '.join(allowed)}")


def _target(where: str, raw: Mapping[str, Any], view_targets: Mapping[str, float]) -> float:
    if raw.get("target") is None:
        if raw["view"] not in view_targets:
            raise InputError(
                f"{where}: field 'target' is missing and view {raw['view']!r} has no "
                f"{FRESHNESS_TAG} tag to take it from"
            )
        return float(view_targets[raw["view"]])
    target = raw["target"]
    if isinstance(target, str) and raw["measure"].endswith("_seconds"):
        return parse_duration(target, f"{where}: field 'target'")
    if isinstance(target, bool) or not isinstance(target, int | float) or not math.isfinite(target):
        raise InputError(f"{where}: field 'target' must be a number, got {target!r}")
    return float(target)


def parse_duration(value: Any, what: str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"26h"``, ``"1d"`` (Prometheus' units)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise InputError(f"{what} must be a duration like 0s, 90s, 10m, 26h; got {value!r}")
    return float(match[1]) * _UNIT_S[match[2]]


def view_targets(store: feast.FeatureStore) -> dict[str, float]:
    """Each registered view's ``freshness_target_s`` tag, in seconds (views without it left out)."""
    return _targets((v.name, v.tags) for v in store.list_feature_views())


def declared_view_targets() -> dict[str, float]:
    """The same, from ``feature_repo/declarations.py`` itself: no registry, no network."""
    from towerline.core.featurestore import REPO_DIR, _declarations

    views = _declarations(REPO_DIR / "declarations.py").REPO.feature_views()
    return _targets((v.name, v.tags) for v in views)


def _targets(tagged: Iterable[tuple[str, Mapping[str, str]]]) -> dict[str, float]:
    targets: dict[str, float] = {}
    for name, tags in tagged:
        if FRESHNESS_TAG not in tags:
            continue
        try:
            targets[name] = float(tags[FRESHNESS_TAG])
        except ValueError:
            raise InputError(
                f"view {name!r}: tag {FRESHNESS_TAG}={tags[FRESHNESS_TAG]!r} is not a number "
                "of seconds"
            ) from None
    return targets


def judge(slos: Iterable[Slo], measures: Iterable[m.Measure]) -> tuple[m.SloResult, ...]:
    """Each SLO against every measure it covers; the worst value decides.

    A breach anywhere is a BREACH even when other partitions could not be measured; with no
    breach, one unmeasured partition or host makes it UNKNOWN (never OK), and the detail
    says why, from the measures' notes.
    """
    by_key: dict[tuple[str, str], list[m.Measure]] = {}
    for measure in measures:
        by_key.setdefault((measure.view, measure.measure), []).append(measure)
    return tuple(_judge_one(slo, by_key.get((slo.view, slo.measure), [])) for slo in slos)


def _judge_one(slo: Slo, covered: list[m.Measure]) -> m.SloResult:
    def result(status: str, worst: float | None, detail: str) -> m.SloResult:
        return m.SloResult(
            slo.name, slo.view, slo.measure, slo.target, slo.comparison, status, worst, detail
        )

    known: list[tuple[float, m.Measure]] = []
    unknown: list[m.Measure] = []
    for c in covered:
        if c.value is not None and not math.isnan(c.value):  # +inf: never ran
            known.append((float(c.value), c))
        else:
            unknown.append(c)
    if not known:
        why = "; ".join(dict.fromkeys(_unknown_why(c) for c in unknown))
        return result(m.UNKNOWN, None, why or f"no measure of {slo.view} {slo.measure} taken")
    pick = max if slo.comparison == "max" else min
    value, worst = pick(known, key=lambda pair: pair[0])
    shown = format_value(slo.measure, value)
    bound = f"{'<=' if slo.comparison == 'max' else '>='} {format_value(slo.measure, slo.target)}"
    breaching = sum(not slo.holds(v) for v, _ in known)
    if breaching:
        more = f" ({breaching} of {len(covered)} breach)" if len(covered) > 1 else ""
        return result(
            m.BREACH, value, f"{_where(worst) or slo.view}: {shown}, target {bound}{more}"
        )
    if unknown:
        names = ", ".join(_where(c) or c.view for c in unknown)
        note = unknown[0].note or "no value"
        return result(
            m.UNKNOWN, value, f"not measured at {names} ({note}); elsewhere worst {shown}"
        )
    return result(m.OK, value, f"worst {shown}, target {bound}")


def _where(measure: m.Measure) -> str:
    labels = (("job", measure.job), ("partition", measure.partition), ("host", measure.host))
    return " ".join(f"{k} {v}" for k, v in labels if v)


def _unknown_why(measure: m.Measure) -> str:
    where = _where(measure)
    note = measure.note or "not measured"
    return f"{where}: {note}" if where else note


def format_value(measure: str, value: float) -> str:
    """A measure's value the way people read it: ``26h``, ``1.5s``, ``95%``, ``3``."""
    if measure.endswith("_seconds"):
        return format_seconds(value)
    if measure.endswith("_ratio"):
        return f"{value * 100:.3g}%"
    return f"{value:g}"


def format_seconds(seconds: float) -> str:
    """``0.25s``, ``45s``, ``10m``, ``1h30m``, ``26h``, ``3d``: the two largest units, rounded."""
    if math.isinf(seconds):
        return "never"
    if abs(seconds) < 60:
        return f"{seconds:.3g}s"
    sign, rest = ("-" if seconds < 0 else ""), round(abs(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    if rest < 2 * 86400:  # "26h" reads better than "1d2h" for daily targets
        units = units[1:]
    parts = []
    for unit, size in units:
        count, rest = divmod(rest, size)
        if count or parts:
            parts.append(f"{count}{unit}" if count else "")
    return sign + "".join(parts[:2])
