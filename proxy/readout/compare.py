"""A route's arms against its default at one point in time: each arm's CTR over its units,
the lift and the verdict. The report calls it once, on everything read; the HTML page
and bench/readout_validity.py call it at earlier cut-offs (what a report read then would
have said), through the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from proxy.config.routes import DEFAULT_ARM
from proxy.readout.sequential import Ratio, ratio_estimate, relative_lift
from proxy.readout.tally import ArmTally
from proxy.readout.verdict import Tuning, Verdict, judge_arms

__all__ = ["ArmFigures", "compare_arms", "series", "time_points"]


@dataclass(frozen=True)
class ArmFigures:
    arm: str
    exposures: int
    units: int
    ctr: float | None
    ctr_ci: tuple[float, float] | None
    lift: float | None
    verdict: Verdict | None  # None for the default arm: it is the baseline


def _ctr_ci(ratio: Ratio, tuning: Tuning) -> tuple[float, float] | None:
    if ratio.variance is None:
        return None
    half = tuning.halfwidth(ratio.variance, ratio.units)
    return max(0.0, ratio.ratio - half), min(1.0, ratio.ratio + half)


def _estimate(
    ratio: Ratio | None, base: Ratio | None, has_base: bool
) -> tuple[float, float | None] | str:
    if not has_base:
        return "no default arm to compare with"
    if ratio is None or base is None:
        return "no exposures in this arm or the default yet"
    lift = relative_lift(ratio, base)
    return "no click on the default arm yet" if lift is None else lift


def _testable(
    est: tuple[float, float | None] | str, ratio: Ratio | None, base: Ratio | None, least: int
) -> tuple[float, float | None] | str:
    """The estimate, or why it is too early for a verdict on it."""
    fewest = min(ratio.units if ratio else 0, base.units if base else 0)
    if isinstance(est, tuple) and fewest < least:
        return f"{fewest} units in an arm: a verdict needs {least} (readout.min_units)"
    return est


def compare_arms(
    arms: Mapping[str, ArmTally], order: Sequence[str], tuning: Tuning, until: int | None = None
) -> list[ArmFigures]:
    """Figures of the arms in ``order`` from the exposures (and clicks) at or before
    ``until`` (None: all). Every arm but the default gets a verdict against it; the arms'
    p-values are Holm-adjusted together."""
    ratios: dict[str, Ratio | None] = {}
    exposures: dict[str, int] = {}
    for name in order:
        n, x = arms[name].unit_counts(until)
        ratios[name] = ratio_estimate(n, x)
        exposures[name] = int(n.sum())
    base = ratios.get(DEFAULT_ARM)
    others = [a for a in order if a != DEFAULT_ARM]
    estimates = [_estimate(ratios[a], base, DEFAULT_ARM in arms) for a in others]
    testable = [
        _testable(e, ratios[a], base, tuning.min_units)
        for a, e in zip(others, estimates, strict=True)
    ]
    units = [(r.units if (r := ratios[a]) else 0) + (base.units if base else 0) for a in others]
    verdicts = dict(zip(others, judge_arms(testable, units, tuning), strict=True))
    out = []
    for name in order:
        ratio = ratios[name]
        est = verdicts.get(name)
        lift = estimates[others.index(name)] if name in verdicts else None
        out.append(
            ArmFigures(
                arm=name,
                exposures=exposures[name],
                units=ratio.units if ratio else 0,
                ctr=ratio.ratio if ratio else None,
                ctr_ci=_ctr_ci(ratio, tuning) if ratio else None,
                lift=lift[0] if isinstance(lift, tuple) else None,
                verdict=est,
            )
        )
    return out


def time_points(first: int | None, last: int | None, count: int = 20) -> list[int]:
    """``count`` cut-offs from ``first`` to ``last`` (ts), evenly spaced, the last at
    ``last``: the log read cumulatively, as a report read at each would have seen it."""
    if first is None or last is None:
        return []
    span = max(0, last - first)
    points = [first + span * i // count for i in range(1, count + 1)]
    return sorted(set(points))


def series(
    arms: Mapping[str, ArmTally], order: Sequence[str], tuning: Tuning, points: Sequence[int]
) -> list[tuple[int, list[ArmFigures]]]:
    """:func:`compare_arms` at each cut-off."""
    return [(t, compare_arms(arms, order, tuning, until=t)) for t in points]
