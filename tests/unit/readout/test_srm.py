"""proxy/readout/srm.py: the split routes.yaml configures, checked against rankgate's own arm
choice, and the sample ratio test on fair and skewed assignments."""

from __future__ import annotations

import pytest

from plugins.context import RequestView
from proxy.config.routes import Route
from proxy.readout.srm import ALARM_P, PercentArm, expected_split, percent_arms, split_of, srm_test
from proxy.routing.arms import ArmChooser


def route(*experiments: dict[str, object]) -> Route:
    return Route.model_validate(
        {"name": "feed", "match": {"path": "/f"}, "model": "v1", "experiments": experiments}
    )


def test_percent_arms_are_the_pure_ones_with_their_effective_salt() -> None:
    r = route(
        {"name": "hdr", "when": {"header": {"X-Beta": "1"}}, "model": "v2"},
        {"name": "mixed", "when": {"cookie": {"b": "1"}, "percent": 50}, "model": "v2"},
        {"name": "ten", "when": {"percent": 10, "salt": "s"}, "model": "v2"},
        {"when": {"percent": 20}, "model": "v2"},
    )
    assert percent_arms(r) == (
        PercentArm("ten", 10.0, "s"),
        PercentArm("exp3", 20.0, "feed:exp3"),
    )
    assert expected_split(route({"when": {"header": {"X": "1"}}, "model": "v2"})) == {
        "default": 1.0
    }


def test_split_same_salt_shares_one_bucket() -> None:
    arms = [PercentArm("a", 10, "s"), PercentArm("b", 30, "s"), PercentArm("c", 20, "s")]
    # b holds [10, 30); c is shadowed by b entirely.
    assert split_of(arms) == pytest.approx({"a": 0.1, "b": 0.2, "c": 0.0, "default": 0.7})


def test_split_different_salts_are_independent() -> None:
    arms = [PercentArm("a", 10, "s1"), PercentArm("b", 30, "s2"), PercentArm("c", 50, "s1")]
    # b: 0.3 of those a missed (0.9); c: bucket s1 in [10, 50) and b missed.
    assert split_of(arms) == pytest.approx(
        {"a": 0.1, "b": 0.27, "c": 0.4 * 0.7, "default": 1 - 0.1 - 0.27 - 0.28}
    )


def test_split_matches_rankgates_own_assignment() -> None:
    r = route(
        {"name": "a", "when": {"percent": 10, "salt": "s1"}, "model": "v2"},
        {"name": "b", "when": {"percent": 30, "salt": "s2"}, "model": "v2"},
        {"name": "c", "when": {"percent": 50, "salt": "s1"}, "model": "v2"},
        {"name": "d", "when": {"percent": 40}, "model": "v2"},
    )
    chooser = ArmChooser.for_route(r)
    view = RequestView({}, {}, {})
    n = 20_000
    counts: dict[str, int] = {}
    for i in range(n):
        arm = chooser.choose(view, f"user-{i}").name
        counts[arm] = counts.get(arm, 0) + 1
    split = expected_split(r)
    assert set(split) == {"a", "b", "c", "d", "default"}
    for arm, share in split.items():
        assert counts.get(arm, 0) / n == pytest.approx(share, abs=0.012), arm
    # The real assignment passes the test it is checked by.
    assert srm_test(counts, split).p_value > 0.001


def test_srm_fair_and_skewed() -> None:
    split = {"beta": 0.5, "default": 0.5}
    fair = srm_test({"beta": 5020, "default": 4980}, split)
    assert fair.p_value == pytest.approx(0.689, abs=0.001)
    assert not fair.warning and not fair.alarm and fair.df == 1 and fair.note is None
    assert fair.expected == {"beta": 5000.0, "default": 5000.0}
    skewed = srm_test({"beta": 4800, "default": 5200}, split)
    assert skewed.p_value < ALARM_P and skewed.alarm and skewed.warning
    warn = srm_test({"beta": 4850, "default": 5150}, split)  # p ~ 0.0027
    assert warn.warning and not warn.alarm


def test_srm_without_a_test() -> None:
    none = srm_test({"default": 10}, {"default": 1.0})
    assert none.p_value is None and not none.alarm and "fewer than two" in (none.note or "")
    empty = srm_test({}, {"beta": 0.1, "default": 0.9})
    assert empty.p_value is None and empty.note == "no units on the percent arms"
    rough = srm_test({"beta": 1, "default": 20}, {"beta": 0.1, "default": 0.9})
    assert rough.p_value is not None and "rough" in (rough.note or "")
    # Units on an arm outside the split do not count.
    assert srm_test(
        {"hdr": 99, "beta": 10, "default": 10}, {"beta": 0.5, "default": 0.5}
    ).observed == {
        "beta": 10,
        "default": 10,
    }
