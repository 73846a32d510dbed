"""The readout's report: per route, the arms' figures and tests, the interleaving
verdicts, the shadow agreement, and the JSON that ``--json`` prints. Built from the
tallies of proxy/readout/tally.py; definitions of each figure: proxy/readout/join.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.config.routes import DEFAULT_ARM, Route, arm_name
from proxy.readout.srm import SrmResult, expected_split, srm_test
from proxy.readout.stats import sign_test, two_proportion_z_test, wilson_interval
from proxy.readout.tally import ArmTally, ShadowTally

__all__ = [
    "SIGNIFICANCE",
    "ArmReport",
    "InterleaveReport",
    "Report",
    "RouteReport",
    "ShadowReport",
    "route_report",
]

SIGNIFICANCE = 0.05  # a p-value below this names a winner


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
    ctr_ci: tuple[float, float]
    lift: float | None
    p_value: float | None
    mrr: float | None


@dataclass(frozen=True)
class InterleaveReport:
    arm: str
    model: str
    model_a: str
    model_b: str
    exposures: int
    clicked_exposures: int
    wins_a: int
    wins_b: int
    ties: int
    preference: float | None  # (wins_a - wins_b) / (wins_a + wins_b + ties): > 0 favours A
    p_value: float | None
    winner: str | None  # the model that wins at p < SIGNIFICANCE


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

    def to_json(self) -> dict[str, Any]:
        return {
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
        "arms": [{**vars(a), "ctr_ci": list(a.ctr_ci)} for a in r.arms],
        "interleaving": [vars(i) for i in r.interleaving],
        "shadow": [vars(s) for s in r.shadow],
    }


def _arm_order(route: Route | None, arms: dict[str, ArmTally]) -> list[str]:
    # The default arm first (the baseline), then the experiments as routes.yaml tries them.
    order = [DEFAULT_ARM]
    if route is not None:
        order += [arm_name(i, e) for i, e in enumerate(route.experiments)]
    known = [a for a in order if a in arms]
    return known + sorted(set(arms) - set(known))


def route_report(
    name: str, arms: dict[str, ArmTally], shadows: dict[str, ShadowTally], route: Route | None
) -> RouteReport:
    """One route's report; ``route`` (from routes.yaml) gives the arm order and the
    split, else there is no sample ratio test."""
    base = arms.get(DEFAULT_ARM)
    arm_reports = []
    interleaving = []
    for arm_name_ in _arm_order(route, arms):
        arm = arms[arm_name_]
        arm_reports.append(_arm_report(arm_name_, arm, None if arm is base else base))
        if arm.interleaved:
            interleaving.append(_interleave_report(arm_name_, arm))
    shadow_reports = [_shadow_report(model, s) for model, s in sorted(shadows.items())]
    srm = None
    if route is not None:
        split = expected_split(route)
        srm = srm_test({a: len(arms[a].units) for a in split if a in arms}, split)
    return RouteReport(
        route=name,
        exposures=sum(a.exposures for a in arms.values()),
        configured=route is not None,
        srm=srm,
        arms=arm_reports,
        interleaving=interleaving,
        shadow=shadow_reports,
    )


def _arm_report(name: str, arm: ArmTally, base: ArmTally | None) -> ArmReport:
    ci = wilson_interval(arm.clicked, arm.exposures)
    assert ci is not None  # an arm exists because it has an exposure
    ctr = arm.clicked / arm.exposures
    lift = p_value = None
    if base is not None:
        base_ctr = base.clicked / base.exposures
        if base_ctr > 0:
            lift = ctr / base_ctr - 1.0
        test = two_proportion_z_test(arm.clicked, arm.exposures, base.clicked, base.exposures)
        if test is not None:
            p_value = test[1]
    return ArmReport(
        arm=name,
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
        ctr=ctr,
        ctr_ci=ci,
        lift=lift,
        p_value=p_value,
        mrr=arm.reciprocal_ranks.mean(),
    )


def _interleave_report(name: str, arm: ArmTally) -> InterleaveReport:
    model = arm.models.most_common(1)[0][0]
    model_a, _, model_b = model.partition("+")  # an interleaved arm's model is "A+B"
    decided = arm.wins_a + arm.wins_b + arm.ties
    p = sign_test(arm.wins_a, arm.wins_b)
    winner = None
    if p is not None and p < SIGNIFICANCE and arm.wins_a != arm.wins_b:
        winner = (model_a or "A") if arm.wins_a > arm.wins_b else (model_b or "B")
    return InterleaveReport(
        arm=name,
        model=model,
        model_a=model_a or "A",
        model_b=model_b or "B",
        exposures=arm.interleaved,
        clicked_exposures=arm.il_clicked,
        wins_a=arm.wins_a,
        wins_b=arm.wins_b,
        ties=arm.ties,
        preference=(arm.wins_a - arm.wins_b) / decided if decided else None,
        p_value=p,
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
