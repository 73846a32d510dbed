"""The experiment readout: join events to exposures and compute, per route and arm, what
``rankgate experiments report`` prints.

Records stream through :meth:`Readout.add` in any order (a click may be read before the
exposure it follows). Counts that need no join are tallied at once; for the join, each
exposure keeps only its arm and served ids, and the events are matched in
:meth:`Readout.result`.

Definitions (the README's "The readout" section says the same for users):

- An arm's exposures count every feed decision on it, applied or not (intent to treat: a
  skip is part of what the arm does).
- CTR: exposures with at least one click / exposures; a 95% Wilson interval.
- Lift: CTR / the default arm's CTR - 1, with a two-proportion z-test p-value.
- MRR: the mean of 1 / (position + 1) over distinct (exposure, clicked item) pairs whose
  item was served.
- Interleaving: each distinct clicked item credits the team that placed it; an exposure
  with a click on a served item is won by the team with more credits, else a tie.
- Shadow: per run, Kendall tau and top-10 overlap between the served order and the
  shadow's; per clicked served item, whether the shadow placed it higher.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.exposurelog import Event, Exposure
from proxy.routes import DEFAULT_ARM, Route, arm_name
from proxy.srm import SrmResult, expected_split, srm_test
from proxy.stats import (
    kendall_tau,
    sign_test,
    top_k_overlap,
    two_proportion_z_test,
    wilson_interval,
)

__all__ = [
    "SIGNIFICANCE",
    "ArmReport",
    "InterleaveReport",
    "Readout",
    "Report",
    "RouteReport",
    "ShadowReport",
]

SIGNIFICANCE = 0.05  # a p-value below this names a winner
OVERLAP_K = 10


class _Sum:
    """A sum whose result does not depend on the order of its terms (fsum is exactly
    rounded), so a stream and the same records in files give the same report."""

    __slots__ = ("terms",)

    def __init__(self) -> None:
        self.terms = array("d")

    def add(self, value: float) -> None:
        self.terms.append(value)

    def __len__(self) -> int:
        return len(self.terms)

    def mean(self) -> float | None:
        return math.fsum(self.terms) / len(self.terms) if self.terms else None

    def total(self) -> float:
        return math.fsum(self.terms)


@dataclass
class _Arm:
    exposures: int = 0
    applied: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    units: set[str] = field(default_factory=set)
    clicks: int = 0
    clicked: int = 0  # exposures with at least one click
    conversions: int = 0
    conversion_value: _Sum = field(default_factory=_Sum)
    reciprocal_ranks: _Sum = field(default_factory=_Sum)
    # interleaved exposures (those with teams)
    interleaved: int = 0
    il_clicked: int = 0
    wins_a: int = 0
    wins_b: int = 0
    ties: int = 0


@dataclass
class _Shadow:
    arms: set[str] = field(default_factory=set)
    runs: int = 0
    taus: _Sum = field(default_factory=_Sum)
    overlaps: _Sum = field(default_factory=_Sum)
    compared: int = 0
    higher: int = 0
    same: int = 0
    lower: int = 0


@dataclass(frozen=True, slots=True)
class _Join:
    arm: _Arm
    shadow: _Shadow | None
    items: tuple[str, ...]
    teams: tuple[str | None, ...] | None
    shadow_items: tuple[str, ...] | None


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

    def to_json(self) -> dict[str, Any]:
        return {
            "routes": [_route_json(r) for r in self.routes],
            "records": {
                "exposures": self.exposures,
                "events": self.events,
                "duplicate_exposures": self.duplicate_exposures,
                "orphan_events": self.orphan_events,
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


class Readout:
    """Feed it records (:meth:`add`), then ask for the :class:`Report`."""

    def __init__(self, route: str | None = None) -> None:
        self.route = route  # only this route, when given
        self._arms: dict[str, dict[str, _Arm]] = {}
        self._shadows: dict[str, dict[str, _Shadow]] = {}
        self._joins: dict[str, _Join] = {}
        self._ids: dict[str, str] = {}
        self._events: dict[str, list[Event]] = {}
        self._exposures = 0
        self._event_count = 0
        self._duplicates = 0
        self._first: int | None = None
        self._last: int | None = None

    def add_all(self, records: Iterable[Exposure | Event]) -> Readout:
        for record in records:
            self.add(record)
        return self

    def add(self, record: Exposure | Event) -> None:
        if self.route is not None and record.route != self.route:
            return
        ts = record.ts
        self._first = ts if self._first is None else min(self._first, ts)
        self._last = ts if self._last is None else max(self._last, ts)
        if isinstance(record, Event):
            self._event_count += 1
            self._events.setdefault(record.id, []).append(record)
            return
        if record.id in self._joins:
            # The same record read twice (e.g. a file given twice): count it once.
            self._duplicates += 1
            return
        self._exposures += 1
        arm = self._arms.setdefault(record.route, {}).setdefault(record.arm, _Arm())
        arm.exposures += 1
        arm.models[record.model] += 1
        if record.outcome == "applied":
            arm.applied += 1
        else:
            arm.reasons[record.reason or record.outcome] += 1
        if record.unit is not None:
            arm.units.add(record.unit)
        if record.teams is not None:
            arm.interleaved += 1
        shadow = None
        if record.shadow_model is not None and record.shadow_items is not None:
            shadow = self._shadows.setdefault(record.route, {}).setdefault(
                record.shadow_model, _Shadow()
            )
            shadow.arms.add(record.arm)
            shadow.runs += 1
            tau = kendall_tau(record.items, record.shadow_items)
            if tau is not None:
                shadow.taus.add(tau)
            overlap = top_k_overlap(record.items, record.shadow_items, OVERLAP_K)
            if overlap is not None:
                shadow.overlaps.add(overlap)
        # The served ids wait in memory for their clicks; one string per distinct id
        # (a catalog repeats across lists) keeps that to a pointer per slot.
        ids = self._ids
        items = tuple([ids.setdefault(i, i) for i in record.items])
        shadow_items = record.shadow_items
        if shadow_items is not None:
            shadow_items = tuple([ids.setdefault(i, i) for i in shadow_items])
        self._joins[record.id] = _Join(arm, shadow, items, record.teams, shadow_items)

    def _join_events(self) -> int:
        orphans = 0
        for request_id, events in self._events.items():
            join = self._joins.get(request_id)
            if join is None:
                orphans += len(events)
                continue
            arm = join.arm
            clicked: list[str] = []
            for event in events:
                if event.kind == "click":
                    arm.clicks += 1
                    if event.item not in clicked:
                        clicked.append(event.item)
                else:
                    arm.conversions += 1
                    arm.conversion_value.add(event.value or 0.0)
            if not clicked:
                continue
            arm.clicked += 1
            position = {item: i for i, item in reversed(list(enumerate(join.items)))}
            served = [(item, position[item]) for item in clicked if item in position]
            for _, pos in served:
                arm.reciprocal_ranks.add(1.0 / (pos + 1))
            if join.teams is not None and served:
                _credit(arm, [join.teams[pos] for _, pos in served])
            if join.shadow is not None and join.shadow_items is not None:
                _compare_shadow(join.shadow, join.shadow_items, served)
        return orphans

    def result(self, routes: Sequence[Route] = ()) -> Report:
        """The report; ``routes`` (from routes.yaml) give the arm order and the split."""
        orphans = self._join_events()
        self._events.clear()  # joined: a second call must not count the clicks again
        configured = {r.name: r for r in routes}
        names = [r.name for r in routes if r.name in self._arms]
        names += sorted(set(self._arms) - set(names))
        if self.route is not None and self.route not in names:
            names.append(self.route)
        out = [
            _route_report(
                name, self._arms.get(name, {}), self._shadows.get(name, {}), configured.get(name)
            )
            for name in names
        ]
        return Report(
            routes=out,
            exposures=self._exposures,
            events=self._event_count,
            duplicate_exposures=self._duplicates,
            orphan_events=orphans,
            first_ts=self._first,
            last_ts=self._last,
        )


def _credit(arm: _Arm, teams: list[str | None]) -> None:
    arm.il_clicked += 1
    a = teams.count("A")
    b = teams.count("B")
    if a > b:
        arm.wins_a += 1
    elif b > a:
        arm.wins_b += 1
    else:
        arm.ties += 1


def _compare_shadow(
    shadow: _Shadow, shadow_items: tuple[str, ...], served: list[tuple[str, int]]
) -> None:
    rank = {item: i for i, item in reversed(list(enumerate(shadow_items)))}
    for item, pos in served:
        if item in rank:
            other = rank[item]
        elif pos < len(shadow_items):
            other = len(shadow_items)  # beyond the shadow's top N: below the served slot
        else:
            continue  # both beyond what the record holds: no comparison
        shadow.compared += 1
        if other < pos:
            shadow.higher += 1
        elif other == pos:
            shadow.same += 1
        else:
            shadow.lower += 1


def _arm_order(route: Route | None, arms: dict[str, _Arm]) -> list[str]:
    # The default arm first (the baseline), then the experiments as routes.yaml tries them.
    order = [DEFAULT_ARM]
    if route is not None:
        order += [arm_name(i, e) for i, e in enumerate(route.experiments)]
    known = [a for a in order if a in arms]
    return known + sorted(set(arms) - set(known))


def _route_report(
    name: str, arms: dict[str, _Arm], shadows: dict[str, _Shadow], route: Route | None
) -> RouteReport:
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


def _arm_report(name: str, arm: _Arm, base: _Arm | None) -> ArmReport:
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


def _interleave_report(name: str, arm: _Arm) -> InterleaveReport:
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


def _shadow_report(model: str, s: _Shadow) -> ShadowReport:
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
