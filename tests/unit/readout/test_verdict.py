"""proxy/readout/verdict.py: each decision and its reason, Holm across arms (levels and
adjusted p), the fixed-horizon rules, and interleaving's verdict from unit votes."""

from __future__ import annotations

import pytest

from proxy.readout.sequential import always_valid_p, cs_halfwidth, fixed_halfwidth
from proxy.readout.stats import sign_test
from proxy.readout.verdict import Tuning, judge_arms, judge_interleaving, judge_pairs

T = Tuning()  # alpha 0.05, 5000 expected units, min effect 2%, min units 100


def test_better_worse_no_difference_keep_running() -> None:
    var = 0.0004  # sd 2%
    better, worse, same, unsure = judge_arms(
        [(0.30, var), (-0.30, var), (0.0, 1e-6), (0.02, var)], [4000] * 4, T
    )
    assert better.decision == "better" and worse.decision == "worse"
    assert better.reason.startswith("the lift's interval +") and "excludes 0 (p = " in better.reason
    assert same.decision == "no difference"
    assert same.reason.endswith("lies within +-2% (the minimum effect)")
    assert unsure.decision == "keep running"
    assert unsure.reason.endswith("holds 0 and +-2%: more units needed")
    assert unsure.p_value is not None and unsure.p_value > 0.05


def test_holm_levels_and_adjusted_p() -> None:
    var, n = 0.0004, 4000
    ests = [(0.07, var), (0.0, var), (0.09, var)]
    verdicts = judge_arms(ests, [n] * 3, T)
    raw = [always_valid_p(e, v, n, 0.05, 5000) for e, v in ests]
    assert [v.p_value_unadjusted for v in verdicts] == raw
    # Sorted: arm 2 (smallest p) x3, arm 0 x2 (but not below the one before), arm 1 x1.
    p2, p0 = min(1.0, 3 * raw[2]), min(1.0, max(3 * raw[2], 2 * raw[0]))
    assert verdicts[2].p_value == pytest.approx(p2) and verdicts[0].p_value == pytest.approx(p0)
    assert verdicts[1].p_value == pytest.approx(max(p0, raw[1]))
    # Each interval at its Holm step's level: alpha/3 for the smallest p, then /2, then /1.
    for i, step in ((2, 3), (0, 2), (1, 1)):
        half = cs_halfwidth(var, n, 0.05 / step, 5000, 0.05)
        assert verdicts[i].interval == pytest.approx((ests[i][0] - half, ests[i][0] + half))
    # One arm alone is not adjusted.
    (alone,) = judge_arms([ests[0]], [n], T)
    assert alone.p_value == alone.p_value_unadjusted == raw[0]


def test_untestable_arms_say_why() -> None:
    why, flat, ok = judge_arms(["no click on the default arm yet", (0.1, 0.0), (0.1, None)],
                               [10, 500, 500], T)  # fmt: skip
    assert (why.decision, why.reason, why.p_value) == (
        "keep running",
        "no click on the default arm yet",
        None,
    )
    assert flat.decision == "keep running" and "no variance" in flat.reason
    assert ok.decision == "keep running" and ok.interval is None


def test_fixed_horizon_reads_once_at_its_size() -> None:
    planned = Tuning(planned_units=5000)
    (early,) = judge_arms([(0.3, 0.0004)], [3000], planned)
    assert early.decision == "keep running"
    assert early.reason == (
        "3000 of the 5000 planned units: a fixed-horizon test is read once, at its planned size"
    )
    big, small = judge_arms([(0.3, 0.0004), (0.03, 0.0004)], [5000, 5000], planned)
    assert big.decision == "better"
    assert big.interval == pytest.approx((0.3 - fixed_halfwidth(0.0004, 0.025),
                                          0.3 + fixed_halfwidth(0.0004, 0.025)))  # fmt: skip
    # At its size, not significant and not inside the minimum effect: it cannot tell.
    assert small.decision == "keep running" and "the planned test cannot tell" in small.reason
    (tight,) = judge_arms([(0.001, 1e-6)], [5000], planned)
    assert tight.decision == "no difference"


def test_interleaving_verdict_is_the_challengers() -> None:
    # 600 units: 180 preferred A, 300 B, 120 even: B is preferred.
    votes = [1] * 180 + [-1] * 300 + [0] * 120
    pref, verdict = judge_interleaving(votes, 1000, T, "ranker_v2")
    assert pref == pytest.approx(-0.2)  # (180 - 300) / 600
    assert verdict.decision == "better" and verdict.reason.startswith("ranker_v2's preference +")
    assert verdict.interval is not None and verdict.interval[1] < 0  # the preference for A
    _, other_way = judge_interleaving([-v for v in votes], 1000, T, "ranker_v2")
    assert other_way.decision == "worse"
    _, few = judge_interleaving(votes[:50], 1000, T, "ranker_v2")
    assert few.decision == "keep running" and few.reason == (
        "50 units with a click: a verdict needs 100"
    )
    assert judge_interleaving([], 0, T, "b")[1].reason == "no unit clicked a served item yet"


def test_interleaving_at_a_fixed_horizon_is_the_sign_test_of_units() -> None:
    votes = [1] * 45 + [-1] * 70 + [0] * 30
    _, early = judge_interleaving(votes, 400, Tuning(planned_units=500), "b")
    assert early.decision == "keep running" and early.reason.startswith("400 of the 500")
    _, once = judge_interleaving(votes, 500, Tuning(planned_units=500), "b")
    assert once.p_value == sign_test(45, 70)  # the 30 even votes left out
    assert once.p_value is not None and once.p_value < 0.05 and once.decision == "better"


def test_unanimous_votes_are_a_verdict_not_a_missing_variance() -> None:
    """Every unit preferring B has no sample variance: the interval takes one vote's worth
    (1/n) instead, so 200 unanimous votes name B, always-valid and at a fixed horizon."""
    votes = [-1] * 200
    pref, verdict = judge_interleaving(votes, 200, T, "b")
    assert pref == -1.0 and verdict.decision == "better" and verdict.p_value is not None
    assert verdict.interval is not None and verdict.interval[1] < 0
    _, once = judge_interleaving(votes, 200, Tuning(planned_units=200), "b")
    assert once.decision == "better" and once.p_value == sign_test(0, 200)
    _, few = judge_interleaving(votes[:10], 200, T, "b")
    assert few.decision == "keep running" and "needs" in few.reason


def test_challengers_against_one_model_are_holm_adjusted_over_the_pairs() -> None:
    """Three challengers of a multileaved arm against A: each one's raw p is its
    two-model test's; adjusted by Holm over the three; each interval at its Holm level."""
    strong = [1] * 150 + [-1] * 330 + [0] * 120  # C: clearly preferred to A
    mild = [1] * 270 + [-1] * 300 + [0] * 30  # B: not clearly
    none = [1] * 300 + [-1] * 300  # D: even
    judged = judge_pairs([mild, strong, none], 1000, T, ["b", "c", "d"])
    alone = [judge_interleaving(v, 1000, T, m)[1] for v, m in ((mild, "b"), (strong, "c"))]
    raw = [v.p_value_unadjusted for _, v in judged]
    assert raw[:2] == [alone[0].p_value, alone[1].p_value]
    assert None not in raw
    p_c = min(1.0, 3 * raw[1])  # the smallest p, times the 3 tests
    assert judged[1][1].p_value == pytest.approx(p_c) and judged[1][1].decision == "better"
    p_b = min(1.0, max(p_c, 2 * raw[0]))
    assert judged[0][1].p_value == pytest.approx(p_b)
    assert judged[2][1].p_value == pytest.approx(max(p_b, raw[2]))
    assert judged[1][0] == pytest.approx(-0.3)  # C's: (150 - 330) / 600
    # C's interval drawn at alpha / 3 (its Holm step): wider than C's alone, at alpha.
    ci, ci_alone = judged[1][1].interval, alone[1].interval
    assert ci is not None and ci_alone is not None
    assert ci[0] < ci_alone[0] and ci[1] > ci_alone[1]
    # One challenger alone is exactly the two-model verdict.
    assert judge_pairs([strong], 1000, T, ["c"])[0] == judge_interleaving(strong, 1000, T, "c")
