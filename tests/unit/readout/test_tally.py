"""proxy/readout/tally.py: the order-free sum, how one exposure's events count into its
arm, the interleaving credit per team and the shadow's agreement with the served order."""

from __future__ import annotations

import random

import pytest

from proxy.readout.logreader import Event, Exposure
from proxy.readout.tally import ArmTally, Join, ShadowTally, Sum
from tests.support.exposure_logs import T0, event, exposure, readout, request_id, route_of

RNG = random.Random(5)


def test_sum_does_not_depend_on_the_order_of_its_terms() -> None:
    terms = [1e16, 1.0, -1e16, 3.0]
    forward, backward = Sum(), Sum()
    for t in terms:
        forward.add(t)
    for t in reversed(terms):
        backward.add(t)
    assert sum(terms) != sum(reversed(terms))  # what a plain float sum would give
    assert forward.total() == backward.total() == 4.0
    assert forward.mean() == 1.0 and len(forward) == 4
    assert Sum().mean() is None and Sum().total() == 0.0


def click(item: str, kind: str = "click", value: float | None = None) -> Event:
    return Event(ts=T0, id="r", route="home-feed", arm="default", item=item, kind=kind, value=value)


def exposed(arm: ArmTally, items: tuple[str, ...], unit: str | None = "u", ts: int = T0) -> int:
    return arm.expose(Exposure(ts, "r", "home-feed", unit, "default", "v1", "applied", None, items))


def test_settle_counts_clicks_once_per_item_and_the_first_slot() -> None:
    arm = ArmTally()
    # "b" is served twice: its first slot is where it was seen.
    items = ("a", "b", "c", "b")
    join = Join(arm, exposed(arm, items), None, items, None, None)
    join.settle([click("b"), click("b"), click("zz"), click("c", "conversion", 2.5)])
    assert (arm.clicks, arm.clicked, arm.conversions) == (3, 1, 1)
    assert arm.conversion_value.total() == 2.5
    assert list(arm.reciprocal_ranks.terms) == [1 / 2]  # b at slot 1; zz was not served
    join.settle([click("x", "conversion")])  # a conversion alone: no clicked exposure
    assert (arm.clicked, arm.conversions, arm.conversion_value.total()) == (1, 2, 2.5)
    assert (arm.il_clicked, arm.wins_a, arm.wins_b, arm.ties) == (0, 0, 0, 0)


def test_settle_credits_teams_and_compares_with_the_shadow() -> None:
    arm, shadow = ArmTally(), ShadowTally()
    items = ("a", "b", "c")
    join = Join(arm, exposed(arm, items), shadow, items, ("A", "B", None), ("c", "a"))
    join.settle([click("b"), click("c")])
    # b is B's, c is pinned (no team): B wins.
    assert (arm.il_clicked, arm.wins_a, arm.wins_b, arm.ties) == (1, 0, 1, 0)
    # b: not in the shadow's top 2, served at 1 (< 2): lower; c: shadow 0, served 2: higher.
    assert (shadow.compared, shadow.higher, shadow.same, shadow.lower) == (2, 1, 0, 1)


def test_interleaving_credits_the_team_that_placed_the_click() -> None:
    rec = exposure
    logs = [
        rec(
            request_id(RNG), "il", "u0", ["a", "b", "c"], T0, model="v1+v2", teams=["A", "B", None]
        ),
        rec(request_id(RNG), "il", "u1", ["a", "b", "c"], T0, model="v1+v2", teams=["B", "A", "B"]),
        rec(request_id(RNG), "il", "u2", ["a", "b", "c"], T0, model="v1+v2", teams=["A", "B", "A"]),
        rec(request_id(RNG), "il", "u3", ["a", "b"], T0, model="v1+v2", teams=["A", "B"]),
        rec(request_id(RNG), "il", "u4", ["a", "b"], T0, model="v1+v2", teams=["A", "B"]),
    ]
    events = [
        event(logs[0], "b"),
        event(logs[0], "c"),  # B 1, the pinned c no credit: B wins
        event(logs[1], "a"),
        event(logs[1], "c"),
        event(logs[1], "b"),  # B 2 A 1: B wins
        event(logs[2], "a"),
        event(logs[2], "b"),  # 1 to 1: a tie
        event(logs[3], "a"),
        event(logs[3], "a"),  # one item twice: one credit, A wins
        event(logs[4], "nope"),  # not served: no verdict
    ]
    (il,) = route_of(readout(logs + events)).interleaving
    assert (il.arm, il.model_a, il.model_b) == ("il", "v1", "v2")
    assert (il.exposures, il.clicked_exposures) == (5, 4)
    assert (il.wins_a, il.wins_b, il.ties) == (1, 2, 1)
    # One unit an exposure: the same votes by unit.
    assert (il.units, il.units_a, il.units_b, il.units_even) == (4, 1, 2, 1)
    assert il.preference == pytest.approx((1 - 2) / 4)
    assert il.p_value is None and il.winner is None and il.decision == "keep running"
    assert il.reason == "4 units with a click: a verdict needs 100"


def test_interleaving_counts_a_unit_once() -> None:
    """A user who clicks A's items in 30 lists is one vote for A, not 30: three users who
    each preferred B once outvote them."""
    logs, events = [], []
    for i in range(30):
        rec = exposure(request_id(RNG), "il", "heavy", ["a", "b"], T0 + i, model="v1+v2",
                       teams=["A", "B"])  # fmt: skip
        logs.append(rec)
        events.append(event(rec, "a"))
    for unit in ("x", "y", "z"):
        rec = exposure(request_id(RNG), "il", unit, ["a", "b"], T0, model="v1+v2",
                       teams=["A", "B"])  # fmt: skip
        logs.append(rec)
        events.append(event(rec, "b"))
    (il,) = route_of(readout(logs + events)).interleaving
    assert (il.wins_a, il.wins_b) == (30, 3)  # by exposure, A looked far ahead
    assert (il.units, il.units_a, il.units_b, il.units_even) == (4, 1, 3, 0)
    assert il.preference == pytest.approx((1 - 3) / 4)


def test_unit_counts_cut_at_a_time() -> None:
    """Per unit: exposures, and those clicked by the cut-off (a click after it not yet)."""
    arm = ArmTally()
    first = Join(arm, exposed(arm, ("a",), "u1", T0), None, ("a",), None, None)
    exposed(arm, ("a",), "u1", T0 + 10)
    late = Join(arm, exposed(arm, ("a",), "u2", T0 + 20), None, ("a",), None, None)
    exposed(arm, ("a",), None, T0 + 30)  # no unit: a unit of its own
    first.settle([Event(T0 + 5, "r", "home-feed", "default", "a", "click")])
    late.settle([Event(T0 + 100, "r", "home-feed", "default", "a", "click")])
    n, x = arm.unit_counts()  # in a canonical order: by exposures, then clicks
    assert (list(n), list(x)) == ([1, 1, 2], [0, 1, 1])
    n, x = arm.unit_counts(until=T0 + 25)
    assert (list(n), list(x)) == ([1, 2], [0, 1])
    n, x = arm.unit_counts(until=T0 + 4)
    assert (list(n), list(x)) == ([1], [0])
    # A time past what 64 bits hold is read, not a crash (the log is not ours to trust).
    far = Join(arm, exposed(arm, ("a",), "u9", 2**70), None, ("a",), None, None)
    far.settle([Event(2**80, "r", "home-feed", "default", "a", "click")])
    assert arm.unit_counts()[0].sum() == 5


def test_shadow_agreement_and_clicked_items() -> None:
    served = ["a", "b", "c", "d"]
    same = exposure(request_id(RNG), "default", "u", served, T0, shadow=("v3", served))
    rev = exposure(request_id(RNG), "default", "u", served, T0, shadow=("v3", served[::-1]))
    short = exposure(request_id(RNG), "beta", "u", served, T0, shadow=("v3", ["d", "x"]))
    other = exposure(request_id(RNG), "default", "u", served, T0, shadow=("v4", ["a"]))
    events = [
        event(rev, "d"),  # served 3, shadow 0: higher
        event(rev, "a"),  # served 0, shadow 3: lower
        event(same, "b"),  # the same slot
        event(short, "a"),  # served 0, not in the shadow's top 2: lower
        event(short, "d"),  # served 3, shadow 0: higher
        event(short, "c"),  # served 2, beyond the shadow's 2: not compared
    ]
    r = route_of(readout([same, rev, short, other, *events]))
    v3, v4 = r.shadow
    assert (v3.model, v3.arms, v3.runs) == ("v3", ["beta", "default"], 3)
    assert v3.kendall_tau == pytest.approx(0.0)  # 1, -1 and (one common id) none
    assert v3.overlap_at_10 == pytest.approx((1 + 1 + 0.5) / 3)
    assert (v3.clicks_compared, v3.clicked_higher, v3.clicked_same, v3.clicked_lower) == (
        5,
        2,
        1,
        2,
    )
    assert v3.clicked_higher_share == pytest.approx(2 / 5)
    assert (v4.runs, v4.kendall_tau, v4.overlap_at_10) == (1, None, 1.0)
