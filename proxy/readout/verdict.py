"""The readout's verdicts: per arm against the default, and per interleaved arm (per
challenger against the first model when multileaved), one of
``keep running``, ``better``, ``worse`` or ``no difference``, with the reason.

Several arms against one default are several tests: their p-values are Holm-Bonferroni
adjusted, and each arm's interval is drawn at its Holm step's level (alpha / (k - r) for
the r-th smallest p of k, counting from 0), so the family keeps alpha. "no difference"
needs the whole interval inside +-min_effect: a non-significant p alone proves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from proxy.readout.sequential import (
    always_valid_p,
    cs_halfwidth,
    fixed_halfwidth,
    fixed_p,
    mean_estimate,
)
from proxy.readout.stats import holm_adjust, sign_test

__all__ = [
    "DECISIONS",
    "DEFAULT_TUNING",
    "Tuning",
    "Verdict",
    "judge_arms",
    "judge_interleaving",
    "judge_pairs",
]

DECISIONS = ("keep running", "better", "worse", "no difference")


@dataclass(frozen=True)
class Tuning:
    """``readout:`` of rankgate.yaml, and the fixed-horizon choice of the command line."""

    alpha: float = 0.05
    expected_units: int = 5000
    min_effect: float = 0.02
    planned_units: int | None = None  # set: a fixed-horizon test, read once at this size
    min_units: int = 100  # per arm, before any verdict

    @property
    def sequential(self) -> bool:
        return self.planned_units is None

    def halfwidth(self, variance: float, n: int, alpha: float | None = None) -> float:
        level = self.alpha if alpha is None else alpha
        if self.sequential:
            return cs_halfwidth(variance, n, level, self.expected_units, self.alpha)
        return fixed_halfwidth(variance, level)

    def p_value(self, estimate: float, variance: float, n: int) -> float:
        if self.sequential:
            return always_valid_p(estimate, variance, n, self.alpha, self.expected_units)
        return fixed_p(estimate, variance)


DEFAULT_TUNING = Tuning()


@dataclass(frozen=True)
class Verdict:
    decision: str
    reason: str
    p_value: float | None  # Holm-adjusted where several arms share a default
    p_value_unadjusted: float | None
    interval: tuple[float, float] | None


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _share(x: float) -> str:
    return f"{x:+.2f}"


def _decide(
    estimate: float,
    ci: tuple[float, float],
    p: float,
    n: int,
    tuning: Tuning,
    what: str,
    share: bool = False,  # a preference (-1..1), shown as such; else a relative lift
) -> tuple[str, str]:
    fmt = _share if share else _pct
    shown = f"{what} {fmt(ci[0])} to {fmt(ci[1])}"
    bound = f"+-{tuning.min_effect:g}" if share else f"+-{tuning.min_effect * 100:g}%"
    if tuning.planned_units is not None and n < tuning.planned_units:
        return "keep running", (
            f"{n} of the {tuning.planned_units} planned units: a fixed-horizon test is read "
            "once, at its planned size"
        )
    effect = tuning.min_effect
    if p < tuning.alpha:
        decision = "better" if estimate > 0 else "worse"
        return decision, f"{shown} excludes 0 (p = {p:.2g} < {tuning.alpha:g})"
    if -effect < ci[0] and ci[1] < effect:
        return "no difference", f"{shown} lies within {bound} (the minimum effect)"
    if not tuning.sequential:
        return "keep running", (
            f"not significant at the planned size, and {shown} still holds {bound}: the "
            "planned test cannot tell (`experiments plan` sizes a larger one)"
        )
    return "keep running", f"{shown} holds 0 and {bound}: more units needed"


def judge_arms(
    estimates: list[tuple[float, float | None] | str], units: list[int], tuning: Tuning
) -> list[Verdict]:
    """Verdicts for arms against the default: per arm (lift, its variance), or why there
    is no lift yet; and the units of the two arms compared."""
    raw: list[float | None] = []
    for est, n in zip(estimates, units, strict=True):
        if isinstance(est, str) or est[1] is None or est[1] <= 0:
            raw.append(None)
        else:
            raw.append(tuning.p_value(est[0], est[1], n))
    adjusted = holm_adjust(raw)
    tested = sorted((p, i) for i, p in enumerate(raw) if p is not None)
    step = {i: len(tested) - rank for rank, (_, i) in enumerate(tested)}
    out = []
    for i, (est, n) in enumerate(zip(estimates, units, strict=True)):
        p, p_adj = raw[i], adjusted[i]
        if isinstance(est, str):
            out.append(Verdict("keep running", est, None, None, None))
            continue
        if p is None or p_adj is None or est[1] is None:
            reason = "no variance in an arm (all or none of its exposures clicked)"
            out.append(Verdict("keep running", reason, None, None, None))
            continue
        half = tuning.halfwidth(est[1], n, tuning.alpha / step[i])
        ci = (est[0] - half, est[0] + half)
        decision, reason = _decide(est[0], ci, p_adj, n, tuning, "the lift's interval")
        out.append(Verdict(decision, reason, p_adj, p, ci))
    return out


def judge_interleaving(
    votes: list[int], exposed: int, tuning: Tuning, model_b: str
) -> tuple[float | None, Verdict]:
    """(preference, verdict) from one vote per unit with a click on a served item: +1 when
    more of the unit's lists went to team A than to B, -1 for B, 0 for even; ``exposed``:
    the units the arm reached (a planned size counts them). The preference is the mean
    vote (> 0 favours A); the verdict is B's, the challenger's, against A: always-valid on
    the mean vote, or at a fixed horizon the exact sign test of the votes."""
    return judge_pairs([votes], exposed, tuning, [model_b])[0]


def judge_pairs(
    votes: list[list[int]], exposed: int, tuning: Tuning, challengers: list[str]
) -> list[tuple[float | None, Verdict]]:
    """:func:`judge_interleaving` for several challengers against one first model (a
    multileaved arm's B, C, ... against A), one list of votes each: the p-values Holm
    adjusted across the pairs and each interval drawn at its Holm step's level, as
    :func:`judge_arms` does across arms. With one challenger, exactly the two-model test."""
    estimates = [mean_estimate(np.asarray(v, dtype=np.float64)) for v in votes]
    raw: list[float | None] = []
    for v, est in zip(votes, estimates, strict=True):
        if est is None or est.units < tuning.min_units:
            raw.append(None)
        elif tuning.sequential:
            # Unanimous votes have no sample variance; a floor of one vote's worth (1/n,
            # the votes being in [-1, 1]) keeps the interval honest instead of no verdict.
            raw.append(tuning.p_value(est.ratio, est.variance or 1.0 / est.units, est.units))
        else:  # read once: the exact sign test of the units' votes (even votes left out)
            raw.append(sign_test(v.count(1), v.count(-1)) or 1.0)
    adjusted = holm_adjust(raw)
    tested = sorted((p, i) for i, p in enumerate(raw) if p is not None)
    step = {i: len(tested) - rank for rank, (_, i) in enumerate(tested)}
    out: list[tuple[float | None, Verdict]] = []
    for i, (est, model) in enumerate(zip(estimates, challengers, strict=True)):
        p, p_adj = raw[i], adjusted[i]
        if est is None:
            reason = "no unit clicked a served item yet"
            out.append((None, Verdict("keep running", reason, None, None, None)))
            continue
        if p is None or p_adj is None:
            reason = f"{est.units} units with a click: a verdict needs {tuning.min_units}"
            out.append((est.ratio, Verdict("keep running", reason, None, None, None)))
            continue
        pref, n = est.ratio, est.units
        half = tuning.halfwidth(est.variance or 1.0 / n, n, tuning.alpha / step[i])
        ci = (pref - half, pref + half)
        # The challenger's verdict: better when the preference for A is below 0.
        what = f"{model}'s preference"
        decision, reason = _decide(-pref, (-ci[1], -ci[0]), p_adj, exposed, tuning, what, True)
        out.append((pref, Verdict(decision, reason, p_adj, p, ci)))
    return out
