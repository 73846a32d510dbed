"""The readout's report: per route, the arms' figures and tests, the interleaving
verdicts, the shadow agreement, and the JSON that ``--json`` prints. Built from the
tallies of proxy/readout/tally.py; definitions of each figure: proxy/readout/join.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.config.routes import DEFAULT_ARM, Route, arm_name
from proxy.readout.banditview import bandit_json
from proxy.readout.compare import ArmFigures, compare_arms, series, time_points
from proxy.readout.multileave import (
    MultileaveReport,
    arm_models,
    multileave_json,
    multileave_report,
)
from proxy.readout.periods import BanditReport, BanditTally, bandit_reports, split_units
from proxy.readout.srm import SrmResult, expected_split, srm_test
from proxy.readout.tally import ArmTally, ShadowTally
from proxy.readout.verdict import DEFAULT_TUNING, Tuning, judge_interleaving

__all__ = [
    "ArmReport",
    "InterleaveReport",
    "Report",
    "RouteReport",
    "ShadowReport",
    "arm_order",
    "method_json",
    "method_line",
    "route_report",
]


@dataclass(frozen=True)
class ArmReport:
    arm: str
    model: str
    models: dict[str, int]
    exposures: int
    units: int
    applied_share: float
    skip_reasons: dict[str, int]
    clicks: int
    clicked_exposures: int
    conversions: int
    conversion_value: float
    ctr: float
    ctr_ci: tuple[float, float] | None  # per unit; a confidence sequence unless fixed-horizon
    lift: float | None
    lift_ci: tuple[float, float] | None
    p_value: float | None  # always-valid unless fixed-horizon; Holm-adjusted across arms
    p_value_unadjusted: float | None
    decision: str | None  # None for the default arm (the baseline)
    reason: str | None
    mrr: float | None


@dataclass(frozen=True)
class InterleaveReport:
    arm: str
    model: str
    model_a: str
    model_b: str
    exposures: int
    clicked_exposures: int
    wins_a: int  # exposures
    wins_b: int
    ties: int
    units: int  # units with a click on a served item: the observations
    units_a: int  # units whose exposures A won more often than B
    units_b: int
    units_even: int
    preference: float | None  # (units_a - units_b) / units: > 0 favours A
    preference_ci: tuple[float, float] | None
    p_value: float | None
    decision: str  # B's (the challenger's) against A
    reason: str
    winner: str | None  # the model the decision names better


@dataclass(frozen=True)
class ShadowReport:
    model: str
    arms: list[str]
    runs: int
    kendall_tau: float | None
    overlap_at_10: float | None
    clicks_compared: int
    clicked_higher: int
    clicked_same: int
    clicked_lower: int
    clicked_higher_share: float | None


@dataclass(frozen=True)
class RouteReport:
    route: str
    exposures: int
    configured: bool  # the route is in routes.yaml (else: no split, no SRM test)
    srm: SrmResult | None
    arms: list[ArmReport]
    interleaving: list[InterleaveReport]
    shadow: list[ShadowReport]
    # The arms' figures at cut-offs through the log (the last: the end), when asked for.
    over_time: list[tuple[int, list[ArmFigures]]] = field(default_factory=list)
    multileaving: list[MultileaveReport] = field(default_factory=list)  # 3+ models
    # Each bandit experiment, period by period (proxy/readout/periods.py).
    bandits: list[BanditReport] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    routes: list[RouteReport]
    exposures: int
    events: int
    duplicate_exposures: int
    orphan_events: int  # events whose exposure is not in the records read
    first_ts: int | None
    last_ts: int | None
    unserved_events: int = 0  # events on an item their exposure did not serve: not credited
    tuning: Tuning = DEFAULT_TUNING

    def to_json(self) -> dict[str, Any]:
        return {
            "method": method_json(self.tuning),
            "routes": [_route_json(r) for r in self.routes],
            "records": {
                "exposures": self.exposures,
                "events": self.events,
                "duplicate_exposures": self.duplicate_exposures,
                "orphan_events": self.orphan_events,
                "unserved_events": self.unserved_events,
                "first_ts": self.first_ts,
                "last_ts": self.last_ts,
            },
        }


def _lists(fields: dict[str, Any]) -> dict[str, Any]:
    """Intervals as JSON arrays (what the printed JSON holds anyway)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def _route_json(r: RouteReport) -> dict[str, Any]:
    srm: dict[str, Any] | None = None
    if r.srm is not None:
        s = r.srm
        srm = {
            "p_value": s.p_value,
            "alarm": s.alarm,
            "warning": s.warning,
            "expected": s.expected,
            "observed": s.observed,
            "split": s.split,
            "statistic": s.statistic,
            "df": s.df,
            "note": s.note,
        }
    return {
        "route": r.route,
        "exposures": r.exposures,
        "configured": r.configured,
        "srm": srm,
        "arms": [_lists(vars(a)) for a in r.arms],
        "interleaving": [_lists(vars(i)) for i in r.interleaving],
        "multileaving": [multileave_json(m) for m in r.multileaving],
        "shadow": [vars(s) for s in r.shadow],
        "bandits": [bandit_json(b) for b in r.bandits],
    }


def method_json(t: Tuning) -> dict[str, Any]:
    return {
        "inference": "sequential" if t.sequential else "fixed-horizon",
        "alpha": t.alpha,
        "expected_units": t.expected_units,
        "min_effect": t.min_effect,
        "planned_units": t.planned_units,
        "min_units": t.min_units,
        "multiple_arms": "holm-bonferroni",
    }


def method_line(t: Tuning) -> str:
    """How the figures were computed, in one line."""
    head = "per-unit variance (each user one observation); "
    if t.sequential:
        head += (
            f"always-valid {(1 - t.alpha) * 100:g}% confidence sequences, tuned for "
            f"{t.expected_units} units (valid however often it is read)"
        )
    else:
        head += (
            f"fixed horizon planned at {t.planned_units} units (valid when read once, at that size)"
        )
    return f"{head}; Holm across arms; no difference = within +-{t.min_effect * 100:g}%"


def arm_order(route: Route | None, arms: dict[str, ArmTally]) -> list[str]:
    # The default arm first (the baseline), then the experiments as routes.yaml tries them.
    order = [DEFAULT_ARM]
    if route is not None:
        order += [arm_name(i, e) for i, e in enumerate(route.experiments)]
    known = [a for a in order if a in arms]
    return known + sorted(set(arms) - set(known))


def route_report(
    name: str,
    arms: dict[str, ArmTally],
    shadows: dict[str, ShadowTally],
    route: Route | None,
    tuning: Tuning = DEFAULT_TUNING,
    span: tuple[int | None, int | None, int] = (None, None, 0),
    bandits: dict[str, BanditTally] | None = None,
) -> RouteReport:
    """One route's report; ``route`` (from routes.yaml) gives the arm order and the
    split, else there is no sample ratio test. ``span``: (first ts, last ts, cut-offs)
    for the figures over time (0 cut-offs: none)."""
    order = arm_order(route, arms)
    figures = compare_arms(arms, order, tuning)
    over_time = series(arms, order, tuning, time_points(*span)) if span[2] else []
    arm_reports = [_arm_report(f, arms[f.arm]) for f in figures]
    leaved = [a for a in order if arms[a].interleaved]
    interleaving = [_interleave_report(a, arms[a], tuning) for a in leaved if _pair(arms[a])]
    multi = [multileave_report(a, arms[a], tuning) for a in leaved if not _pair(arms[a])]
    shadow_reports = [_shadow_report(model, s) for model, s in sorted(shadows.items())]
    srm = None
    if route is not None:
        split = expected_split(route)
        units = split_units(route, arms)  # a bandit arm's units are its models'
        srm = srm_test({a: units[a] for a in split if a in units}, split)
    return RouteReport(
        route=name,
        exposures=sum(a.exposures for a in arms.values()),
        configured=route is not None,
        srm=srm,
        arms=arm_reports,
        interleaving=interleaving,
        shadow=shadow_reports,
        over_time=over_time,
        multileaving=multi,
        bandits=bandit_reports(bandits or {}, tuning),
    )


def _pair(arm: ArmTally) -> bool:
    return len(arm_models(arm)) <= 2


def _arm_report(f: ArmFigures, arm: ArmTally) -> ArmReport:
    v = f.verdict
    return ArmReport(
        arm=f.arm,
        model=arm.models.most_common(1)[0][0],
        models=dict(arm.models.most_common()),
        exposures=arm.exposures,
        units=len(arm.units),
        applied_share=arm.applied / arm.exposures,
        skip_reasons=dict(arm.reasons.most_common()),
        clicks=arm.clicks,
        clicked_exposures=arm.clicked,
        conversions=arm.conversions,
        conversion_value=arm.conversion_value.total(),
        ctr=arm.clicked / arm.exposures,
        ctr_ci=f.ctr_ci,
        lift=f.lift,
        lift_ci=v.interval if v else None,
        p_value=v.p_value if v else None,
        p_value_unadjusted=v.p_value_unadjusted if v else None,
        decision=v.decision if v else None,
        reason=v.reason if v else None,
        mrr=arm.reciprocal_ranks.mean(),
    )


def _interleave_report(name: str, arm: ArmTally, tuning: Tuning) -> InterleaveReport:
    model = arm.models.most_common(1)[0][0]
    model_a, _, model_b = model.partition("+")  # an interleaved arm's model is "A+B"
    model_a, model_b = model_a or "A", model_b or "B"
    votes = arm.unit_votes()
    preference, verdict = judge_interleaving(votes, arm.unit_count, tuning, model_b)
    winner = {"better": model_b, "worse": model_a}.get(verdict.decision)
    return InterleaveReport(
        arm=name,
        model=model,
        model_a=model_a,
        model_b=model_b,
        exposures=arm.interleaved,
        clicked_exposures=arm.il_clicked,
        wins_a=arm.wins_a,
        wins_b=arm.wins_b,
        ties=arm.ties,
        units=len(votes),
        units_a=votes.count(1),
        units_b=votes.count(-1),
        units_even=votes.count(0),
        preference=preference,
        preference_ci=verdict.interval,
        p_value=verdict.p_value,
        decision=verdict.decision,
        reason=verdict.reason,
        winner=winner,
    )


def _shadow_report(model: str, s: ShadowTally) -> ShadowReport:
    return ShadowReport(
        model=model,
        arms=sorted(s.arms),
        runs=s.runs,
        kendall_tau=s.taus.mean(),
        overlap_at_10=s.overlaps.mean(),
        clicks_compared=s.compared,
        clicked_higher=s.higher,
        clicked_same=s.same,
        clicked_lower=s.lower,
        clicked_higher_share=s.higher / s.compared if s.compared else None,
    )
