"""A multileaved arm's report (``interleave:`` with three to six models, team-draft
multileaving: proxy/feed/interleave.py): which model the clicks prefer, by two credit
models, how far they agree, and a verdict per challenger against the first model.

- Per exposure: an exposure whose clicks credited a team (clicked items that team
  placed) is won by the team(s) with the most clicked items; a tie of several is split
  evenly among them. Per model: its share of those exposures won; per pair (i, j): of
  the exposures where i and j had different counts, the share i had more.
- Per user: over all of a user's exposures, the clicked items per team added up; the
  user prefers the model with the most, and no model on a tie. Per model: the users
  preferring it; per pair (i, j): of the users whose totals for i and j differ, the
  share with more for i.
- Agreement: whether both name the same best model (the one with the largest share,
  resp. the most users; none on a tie), and on how many pairs the two preferences have
  the same sign (i ahead, j ahead, or even).
- The verdicts: per challenger X (B, C, ...) against the first model A, one vote per
  user, the sign of (exposures A beat X) - (exposures X beat A): the two-model test
  (proxy/readout/verdict.py), the p-values Holm adjusted over the k - 1 pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.readout.tally import TEAMS, ArmTally
from proxy.readout.verdict import Tuning, judge_pairs

__all__ = ["MultileaveReport", "PairVerdict", "arm_models", "multileave_json", "multileave_report"]

Matrix = list[list[float | None]]


@dataclass(frozen=True)
class PairVerdict:
    model: str  # the challenger, against the first model (the control)
    units: int  # units with a credited click: the observations
    units_control: int  # units whose exposures the control won more often than this model
    units_model: int
    units_even: int
    preference: float | None  # for the control, as in the two-model report: < 0 favours model
    preference_ci: tuple[float, float] | None
    p_value: float | None  # Holm-adjusted across the arm's pairs
    p_value_unadjusted: float | None
    decision: str  # the challenger's against the control
    reason: str


@dataclass(frozen=True)
class MultileaveReport:
    arm: str
    model: str  # "A+B+C"
    models: list[str]  # in team order: A, B, C, ...
    exposures: int
    credited_exposures: int  # exposures whose clicks credited a team
    exposure_wins: list[float]  # per model, the credited exposures it won (ties split)
    exposure_ties: int  # credited exposures won by several teams at once
    exposure_pairs: Matrix  # [i][j]: where i and j differ, the share i had more clicks
    users: int  # users with a credited click
    user_prefers: list[int]  # per model, the users whose clicks preferred it
    users_tied: int  # users whose clicks preferred no one model
    user_pairs: Matrix  # [i][j]: of users whose totals for i and j differ, share with more i
    best_by_exposure: str | None
    best_by_user: str | None
    agree: bool  # both credit models name the same best model
    pairs_agreeing: int  # pairs on which the two credit models' preferences have one sign
    pairs: int
    verdicts: list[PairVerdict]  # B, C, ... against A
    winner: str | None  # the model the verdicts name best


def arm_models(arm: ArmTally) -> list[str]:
    """An interleaved arm's models, in team order, from its model label ``A+B+C`` (at
    most one per team letter, whatever a log says)."""
    return arm.models.most_common(1)[0][0].split("+")[: len(TEAMS)]


def _best(values: list[float] | list[int], models: list[str]) -> str | None:
    top = max(values)
    leaders = [m for m, v in zip(models, values, strict=True) if v == top]
    return leaders[0] if len(leaders) == 1 and top > 0 else None


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _matrix(beat: list[list[int]]) -> Matrix:
    k = len(beat)
    return [
        [
            beat[i][j] / (beat[i][j] + beat[j][i]) if i != j and beat[i][j] + beat[j][i] else None
            for j in range(k)
        ]
        for i in range(k)
    ]


def _beats(counts: list[tuple[int, ...]], k: int) -> list[list[int]]:
    """[i][j]: of the counts, how many have more for team i than for team j."""
    beat = [[0] * k for _ in range(k)]
    for c in counts:
        for i in range(k):
            for j in range(k):
                beat[i][j] += c[i] > c[j]
    return beat


def multileave_report(name: str, arm: ArmTally, tuning: Tuning) -> MultileaveReport:
    models = arm_models(arm)
    k = len(models)
    clicks = [(unit, c[:k]) for unit, c in arm.team_clicks()]
    credited = [c for _, c in clicks if any(c)]
    wins = [0] * k  # in 60ths of an exposure: any split of a tie (1 to 6 ways) is whole,
    ties = 0  # so the sums do not depend on the order the records were read in
    for c in credited:
        top = max(c)
        leaders = [i for i in range(k) if c[i] == top]
        ties += len(leaders) > 1
        for i in leaders:
            wins[i] += 60 // len(leaders)
    shares = [w / 60 / len(credited) if credited else 0.0 for w in wins]
    per_user: dict[int, list[int]] = {}
    for unit, c in clicks:
        if any(c):
            total = per_user.setdefault(unit, [0] * k)
            for i in range(k):
                total[i] += c[i]
    user_counts = [tuple(c) for c in per_user.values()]
    prefers = [0] * k
    for c in user_counts:
        best = _best(list(c), models)
        if best is not None:
            prefers[models.index(best)] += 1
    by_exposure, by_user = _beats(credited, k), _beats(user_counts, k)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    agreeing = sum(
        _sign(by_exposure[i][j] - by_exposure[j][i]) == _sign(by_user[i][j] - by_user[j][i])
        for i, j in pairs
    )
    best_e, best_u = _best(shares, models), _best(prefers, models)
    verdicts = _verdicts(arm, clicks, models, tuning)
    return MultileaveReport(
        arm=name,
        model="+".join(models),
        models=models,
        exposures=arm.interleaved,
        credited_exposures=len(credited),
        exposure_wins=shares,
        exposure_ties=ties,
        exposure_pairs=_matrix(by_exposure),
        users=len(user_counts),
        user_prefers=prefers,
        users_tied=len(user_counts) - sum(prefers),
        user_pairs=_matrix(by_user),
        best_by_exposure=best_e,
        best_by_user=best_u,
        agree=best_e is not None and best_e == best_u,
        pairs_agreeing=agreeing,
        pairs=len(pairs),
        verdicts=verdicts,
        winner=_winner(models, verdicts),
    )


def _verdicts(
    arm: ArmTally, clicks: list[tuple[int, tuple[int, ...]]], models: list[str], tuning: Tuning
) -> list[PairVerdict]:
    """Per challenger, one vote per unit with a click on a served item (as the two-model
    test: a unit whose clicks were all on fixed items votes even)."""
    k = len(models)
    # unit -> per challenger [control wins, challenger wins], over the unit's exposures
    tallies: dict[int, list[list[int]]] = {}
    for unit, c in clicks:
        per = tallies.setdefault(unit, [[0, 0] for _ in range(k - 1)])
        for x in range(1, k):
            per[x - 1][0] += c[0] > c[x]
            per[x - 1][1] += c[x] > c[0]
    votes = [sorted(_sign(u[x][0] - u[x][1]) for u in tallies.values()) for x in range(k - 1)]
    judged = judge_pairs(votes, arm.unit_count, tuning, models[1:])
    out = []
    for model, v, (pref, verdict) in zip(models[1:], votes, judged, strict=True):
        out.append(
            PairVerdict(
                model=model,
                units=len(v),
                units_control=v.count(1),
                units_model=v.count(-1),
                units_even=v.count(0),
                preference=pref,
                preference_ci=verdict.interval,
                p_value=verdict.p_value,
                p_value_unadjusted=verdict.p_value_unadjusted,
                decision=verdict.decision,
                reason=verdict.reason,
            )
        )
    return out


def _winner(models: list[str], verdicts: list[PairVerdict]) -> str | None:
    """A challenger found better than the control (the most preferred, when several), the
    control when every challenger is found worse; else none yet."""
    better = [v for v in verdicts if v.decision == "better" and v.preference is not None]
    if better:
        return min(better, key=lambda v: v.preference or 0.0).model
    if verdicts and all(v.decision == "worse" for v in verdicts):
        return models[0]
    return None


def multileave_json(m: MultileaveReport) -> dict[str, Any]:
    out = {k: v for k, v in vars(m).items() if k != "verdicts"}
    out["verdicts"] = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in vars(p).items()} for p in m.verdicts
    ]
    return out
