"""The validation gate of ``towerline retrain``: pure decisions, no I/O.

A candidate N+1 replaces the live N only when, on the same held-out events, it is not worse
than N by more than ``margin`` (absolute) on any checked metric: the gate metric (default
``with_context.recall@50``), NDCG@10 with context, and the share of held-out users the
encoder produced a state for. One absolute margin for all three keeps the rule readable:
each is a share in [0, 1]. The default 0.01 lets a retrain on fresh data through when it is
as good as the live version within noise, and stops one that lost a point of recall.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

GATE_METRIC = "with_context.recall@50"
ALSO_CHECKED = ("with_context.ndcg@10", "state_share")
DEFAULT_MARGIN = 0.01
SHOWN = ("with_context.recall@10", "no_context.recall@50", "popularity.recall@50")


@dataclasses.dataclass(frozen=True)
class GateConfig:
    metric: str = GATE_METRIC
    margin: float = DEFAULT_MARGIN
    also: tuple[str, ...] = ALSO_CHECKED

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"the gate margin is an absolute share in [0, 1], got {self.margin}")

    @property
    def checked(self) -> tuple[str, ...]:
        return (self.metric, *(m for m in self.also if m != self.metric))


def metric_value(metrics: Mapping[str, Any], name: str) -> float:
    """``metrics["with_context"]["recall@50"]`` for ``"with_context.recall@50"``."""
    value: Any = metrics
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"no metric {name!r} (have {sorted(metrics)})")
        value = value[part]
    return float(value)


def decide(
    candidate: Mapping[str, Any], live: Mapping[str, Any], cfg: GateConfig
) -> dict[str, Any]:
    """{passed, reason, metric, margin, checks: [{metric, candidate, live, delta, passed}]}
    for two versions' metrics on the same held-out events."""
    checks = []
    for name in cfg.checked:
        new, old = metric_value(candidate, name), metric_value(live, name)
        checks.append(
            {
                "metric": name,
                "candidate": round(new, 6),
                "live": round(old, 6),
                "delta": round(new - old, 6),
                "passed": new >= old - cfg.margin,
            }
        )
    failed = [c for c in checks if not c["passed"]]
    if failed:
        reason = "; ".join(
            f"{c['metric']} {c['candidate']:.4f} < live {c['live']:.4f} - margin {cfg.margin}"
            for c in failed
        )
    else:
        reason = f"no checked metric worse than the live version by more than {cfg.margin}"
    return {
        "passed": not failed,
        "reason": reason,
        "metric": cfg.metric,
        "margin": cfg.margin,
        "checks": checks,
    }


def gate_table(report: Mapping[str, Any]) -> str:
    """Both versions' metrics side by side, the checked ones marked, then the decision."""
    cand, live = report["candidate"], report["live"]
    gate = report["gate"]
    checked = {c["metric"]: c for c in gate["checks"]}
    names = list(checked) + [m for m in SHOWN if m not in checked]
    head = (
        f"{'metric':<26}{'live ' + live['version']:>12}{'new ' + cand['version']:>12}{'delta':>9}"
    )
    lines = [head]
    for name in names:
        try:
            old, new = metric_value(live["metrics"], name), metric_value(cand["metrics"], name)
        except KeyError:
            continue
        mark = "" if name not in checked else ("  ok" if checked[name]["passed"] else "  WORSE")
        lines.append(f"{name:<26}{old:>12.4f}{new:>12.4f}{new - old:>+9.4f}{mark}")
    held = report["held_out"]
    lines.append(
        f"held-out {held['start']}..{held['end']}: {report['users']} users; margin {gate['margin']}"
    )
    verdict = "PASSED" if gate["passed"] else "REJECTED"
    lines.append(f"gate {verdict}: {gate['reason']}")
    return "\n".join(lines)
