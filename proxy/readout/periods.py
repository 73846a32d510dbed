"""A bandit's report, period by period, from the exposure log alone.

Each bandit model's exposure record carries its weight period and that period's weights
(``bandit`` in docs/exposures.md). Per period and model: units (users), exposures,
clicked exposures and the CTR by unit; per period, a sample ratio test of the units per
model against the period's weights (a unit seen in two periods counts in each), and a
combined test over the periods (the sum of their chi-squares on the sum of their degrees
of freedom).

Each model against the first (the control) on its CTR **weighted by period**
(GrowthBook's "weight by period"): estimate_m = sum_p w_p * ctr_{m,p}, with w_p the
period's share of the exposures over the periods in which every model was served (by at
least two units), and variance sum_p w_p^2 var_{m,p} (each period's delta-method variance
by unit, proxy/readout/sequential.py). The lift over the control, its always-valid
interval and p, Holm across the models: proxy/readout/verdict.py, as for the arms. A model
that gained traffic while CTR rose for every model is not credited for the rise, as a
pooled CTR would credit it.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from proxy.config.routes import Route, arm_name
from proxy.readout.logreader import BanditTag
from proxy.readout.sequential import Ratio, ratio_estimate, relative_lift
from proxy.readout.srm import SrmResult, srm_test
from proxy.readout.stats import chi2_sf
from proxy.readout.tally import NEVER, ArmTally, Counts
from proxy.readout.verdict import Tuning, Verdict, judge_arms

__all__ = [
    "BanditReport",
    "BanditTally",
    "ModelResult",
    "PeriodFigures",
    "PeriodModel",
    "bandit_reports",
    "combined_srm",
    "split_units",
]


@dataclass
class _Period:
    weights: tuple[float, ...]
    # Per model: the indices of the period's exposures in that model's arm tally.
    indices: list[array[int]]
    first_ts: int  # the period's first exposure read


@dataclass
class BanditTally:
    """One bandit's exposures by period; their clicks are read from the model arms'
    tallies (proxy/readout/tally.py) once the events are joined."""

    models: tuple[str, ...]
    arms: dict[str, ArmTally] = field(default_factory=dict)  # model -> its arm's tally
    periods: dict[int, _Period] = field(default_factory=dict)
    mismatched: int = 0  # records whose models or weights are not their period's: left out

    def add(self, tag: BanditTag, arm: str, tally: ArmTally, index: int, ts: int) -> None:
        model = arm[len(tag.arm) + 1 :]
        period = self.periods.get(tag.period)
        if tag.models != self.models or (period is not None and period.weights != tag.weights):
            self.mismatched += 1
            return
        if period is None:
            indices = [array("q") for _ in self.models]
            period = self.periods[tag.period] = _Period(tag.weights, indices, ts)
        period.first_ts = min(period.first_ts, ts)
        k = self.models.index(model)
        self.arms[model] = tally
        period.indices[k].append(index)


@dataclass(frozen=True)
class PeriodModel:
    model: str
    weight: float
    units: int
    exposures: int
    clicked_exposures: int
    ctr: float | None  # by unit: clicked exposures / exposures over the period's units


@dataclass(frozen=True)
class PeriodFigures:
    period: int
    first_ts: int  # its first exposure in the log read
    models: list[PeriodModel]
    share: float | None  # the period's weight in the weighted CTR (None: not every model served)
    srm: SrmResult


@dataclass(frozen=True)
class ModelResult:
    model: str
    arm: str
    units: int  # summed over the weighed periods (a unit in two periods counts twice)
    exposures: int  # in the weighed periods
    weighted_ctr: float | None
    weighted_ctr_ci: tuple[float, float] | None
    lift: float | None  # weighted CTR / the control's - 1
    lift_ci: tuple[float, float] | None
    p_value: float | None  # Holm-adjusted across the models
    p_value_unadjusted: float | None
    decision: str | None  # None for the control
    reason: str | None


@dataclass(frozen=True)
class BanditReport:
    arm: str
    models: list[str]
    control: str
    periods: list[PeriodFigures]
    results: list[ModelResult]
    srm: SrmResult  # the periods' tests combined
    mismatched: int


def _unit_counts(arm: ArmTally, indices: array[int]) -> tuple[Counts, Counts, int]:
    """Per unit of these exposures: (exposures, those clicked), canonical order; and the
    number of clicked exposures."""
    idx = np.frombuffer(indices, dtype=np.int64)
    unit = np.frombuffer(arm.unit_of, dtype=np.int64)[idx]
    clicked = np.frombuffer(arm.click_ts, dtype=np.int64)[idx] < NEVER
    n = np.bincount(unit, minlength=arm.unit_count)
    x = np.bincount(unit, weights=clicked, minlength=arm.unit_count)
    keep = n > 0
    n, x = n[keep].astype(np.float64), x[keep]
    order = np.lexsort((x, n))
    return n[order], x[order], int(clicked.sum())


def combined_srm(tests: Sequence[SrmResult]) -> SrmResult:
    """The periods' chi-squares summed, on the sum of their degrees of freedom; the
    observed and expected units summed per model."""
    done = [t for t in tests if t.p_value is not None and t.statistic is not None]
    observed: dict[str, int] = {}
    expected: dict[str, float] = {}
    for t in tests:
        for m, n in t.observed.items():
            observed[m] = observed.get(m, 0) + n
            expected[m] = expected.get(m, 0.0) + t.expected[m]
    total = math.fsum(expected.values())
    split = {m: e / total if total > 0 else 0.0 for m, e in expected.items()}
    common = {"split": split, "observed": observed, "expected": expected}
    if not done:
        return SrmResult(None, None, None, note="no period to test", **common)
    stat = math.fsum(t.statistic or 0.0 for t in done)
    df = sum(t.df or 0 for t in done)
    p = 0.0 if math.isinf(stat) else chi2_sf(stat, df)
    notes = sorted({t.note for t in done if t.note})
    return SrmResult(p, stat, df, note="; ".join(notes) or None, **common)


def _period(
    number: int, bandit: BanditTally, p: _Period
) -> tuple[PeriodFigures, list[Ratio | None]]:
    ratios: list[Ratio | None] = []
    rows = []
    for k, model in enumerate(bandit.models):
        arm = bandit.arms.get(model)
        if arm is None or not p.indices[k]:
            ratios.append(None)
            rows.append(PeriodModel(model, p.weights[k], 0, 0, 0, None))
            continue
        n, x, clicked = _unit_counts(arm, p.indices[k])
        ratio = ratio_estimate(n, x)
        ratios.append(ratio)
        ctr = ratio.ratio if ratio else None
        rows.append(PeriodModel(model, p.weights[k], len(n), len(p.indices[k]), clicked, ctr))
    total = math.fsum(p.weights)  # 1 up to the 4 digits a record keeps
    split = {m: w / total for m, w in zip(bandit.models, p.weights, strict=True)}
    srm = srm_test({r.model: r.units for r in rows}, split)
    return PeriodFigures(number, p.first_ts, rows, None, srm), ratios


def _weighted(ratios: list[tuple[float, Ratio]]) -> tuple[Ratio, int] | None:
    """sum w_p r_p, with variance sum w_p^2 var_p; and the units summed."""
    if not ratios:
        return None
    units = sum(r.units for _, r in ratios)
    est = math.fsum(w * r.ratio for w, r in ratios)
    var = math.fsum(w * w * (r.variance or 0.0) for w, r in ratios)
    return Ratio(units, est, var), units


def _estimates(
    weighted: list[Ratio | None], tuning: Tuning
) -> tuple[list[tuple[float, float | None] | str], list[int]]:
    base = weighted[0]
    estimates: list[tuple[float, float | None] | str] = []
    units = []
    for ratio in weighted[1:]:
        units.append((ratio.units if ratio else 0) + (base.units if base else 0))
        if ratio is None or base is None:
            estimates.append("no period in which every model was served by two units yet")
            continue
        lift = relative_lift(ratio, base)
        fewest = min(ratio.units, base.units)
        if lift is None:
            estimates.append("no click on the control model in the weighed periods yet")
        elif fewest < tuning.min_units:
            estimates.append(
                f"{fewest} units in a model: a verdict needs {tuning.min_units} (readout.min_units)"
            )
        else:
            estimates.append(lift)
    return estimates, units


def _result(
    model: str,
    arm: str,
    ratio: Ratio | None,
    exposures: int,
    judged: tuple[tuple[float, float | None] | str, Verdict] | None,
    tuning: Tuning,
) -> ModelResult:
    """A model's figures; ``judged``: its estimate and verdict (None for the control)."""
    ci = None
    if ratio is not None and ratio.variance is not None and ratio.units > 0:
        half = tuning.halfwidth(ratio.variance, ratio.units)
        ci = (max(0.0, ratio.ratio - half), min(1.0, ratio.ratio + half))
    est, v = judged if judged is not None else (None, None)
    return ModelResult(
        model=model,
        arm=arm,
        units=ratio.units if ratio else 0,
        exposures=exposures,
        weighted_ctr=ratio.ratio if ratio else None,
        weighted_ctr_ci=ci,
        lift=est[0] if isinstance(est, tuple) else None,
        lift_ci=v.interval if v else None,
        p_value=v.p_value if v else None,
        p_value_unadjusted=v.p_value_unadjusted if v else None,
        decision=v.decision if v else None,
        reason=v.reason if v else None,
    )


def bandit_report(arm: str, bandit: BanditTally, tuning: Tuning) -> BanditReport:
    """One bandit's periods, its models' CTR weighted by period and their verdicts."""
    figures: list[PeriodFigures] = []
    full: list[tuple[PeriodFigures, list[Ratio]]] = []
    for number in sorted(bandit.periods):
        fig, ratios = _period(number, bandit, bandit.periods[number])
        figures.append(fig)
        served = [r for r in ratios if r is not None and r.units >= 2]
        if len(served) == len(ratios):  # every model, by two units: a variance each
            full.append((fig, served))
    total = sum(sum(m.exposures for m in f.models) for f, _ in full)
    shares = {f.period: sum(m.exposures for m in f.models) / total for f, _ in full}
    figures = [
        PeriodFigures(f.period, f.first_ts, f.models, shares.get(f.period), f.srm) for f in figures
    ]
    weighted: list[Ratio | None] = []
    exposures: list[int] = []
    for k in range(len(bandit.models)):
        w = _weighted([(shares[f.period], r[k]) for f, r in full])
        weighted.append(w[0] if w else None)
        exposures.append(sum(f.models[k].exposures for f, _ in full))
    estimates, units = _estimates(weighted, tuning)
    judged = [None, *zip(estimates, judge_arms(estimates, units, tuning), strict=True)]
    results = [
        _result(m, f"{arm}.{m}", weighted[k], exposures[k], judged[k], tuning)
        for k, m in enumerate(bandit.models)
    ]
    return BanditReport(
        arm=arm,
        models=list(bandit.models),
        control=bandit.models[0],
        periods=figures,
        results=results,
        srm=combined_srm([f.srm for f in figures]),
        mismatched=bandit.mismatched,
    )


def bandit_reports(bandits: Mapping[str, BanditTally], tuning: Tuning) -> list[BanditReport]:
    return [bandit_report(arm, b, tuning) for arm, b in sorted(bandits.items())]


def split_units(route: Route, arms: Mapping[str, ArmTally]) -> dict[str, int]:
    """Units per arm for the route's sample ratio test: a bandit arm's are its models'
    (each ``ARM.MODEL``), a unit served by two of them counted once."""
    counts = {name: len(tally.units) for name, tally in arms.items()}
    for j, exp in enumerate(route.experiments):
        if exp.bandit is None:
            continue
        name = arm_name(j, exp)
        units: set[str] = set()
        for model in exp.bandit.models:
            tally = arms.get(f"{name}.{model}")
            if tally is not None:
                units.update(tally.units)
        if units:
            counts[name] = len(units)
    return counts
