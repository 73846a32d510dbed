"""A multileaved arm's report: on generated traffic where the third model is clearly the
best, both credit models name it and the verdicts find it better than the first; on a
small hand-made log, each figure exactly (ties split per exposure, none per user, the
two credit models disagreeing), and the same report whatever order the records come in."""

from __future__ import annotations

import random

import pytest

from proxy.readout.multileave import multileave_json
from proxy.readout.verdict import Tuning
from tests.support.exposure_logs import (
    T0,
    Record,
    event,
    exposure,
    interleaved_traffic,
    multileaved_traffic,
    readout,
    route_of,
)

MODELS = "v1+v2+v3"


def test_the_clearly_best_model_is_named_by_both_credit_models_and_the_verdicts() -> None:
    report = route_of(readout(multileaved_traffic(600, 3, seed=7), tuning=Tuning(min_units=50)))
    assert report.interleaving == []
    (m,) = report.multileaving
    assert m.models == ["ranker_v1", "ranker_v2", "ranker_v3"]
    assert m.exposures == 1800 and 0 < m.credited_exposures < 1800
    assert m.exposure_wins[2] > m.exposure_wins[1] > m.exposure_wins[0]
    assert sum(m.exposure_wins) == pytest.approx(1.0)
    assert m.user_prefers[2] > m.user_prefers[1] > m.user_prefers[0]
    assert m.best_by_exposure == m.best_by_user == "ranker_v3" and m.agree
    assert m.pairs == 3 and m.pairs_agreeing == 3
    for pairs in (m.exposure_pairs, m.user_pairs):
        assert pairs[2][0] > 0.6 and pairs[0][2] == pytest.approx(1 - pairs[2][0])
        assert pairs[1][1] is None
    v2, v3 = m.verdicts
    assert (v2.model, v3.model) == ("ranker_v2", "ranker_v3")
    assert v3.decision == "better" and v3.units_model > 2 * v3.units_control
    assert v3.p_value is not None and v3.p_value_unadjusted is not None
    # Holm over two pairs: the smaller p doubled, the larger kept (not below the first).
    assert v3.p_value == pytest.approx(min(1.0, 2 * v3.p_value_unadjusted))
    assert m.winner == "ranker_v3"
    body = multileave_json(m)
    assert body["verdicts"][1]["decision"] == "better"
    assert isinstance(body["verdicts"][1]["preference_ci"], list)


def hand_log() -> list[Record]:
    """u1: three exposures, one click each on A's item; u2: one exposure with two clicks
    on B's items; u3: one exposure with one click on A's and one on C's (a tie). Per
    exposure A wins 3.5 of 5, per user A and B tie on one user each (u3 ties: no one)."""
    out: list[Record] = []

    def one(rid: int, unit: str, clicks: list[str]) -> None:
        rec = exposure(
            f"{rid:024x}", "tri", unit, ["a", "b", "c", "d"], T0 + rid, model=MODELS,
            teams=["A", "B", "C", "B"],
        )  # fmt: skip
        out.extend([rec, *(event(rec, item) for item in clicks)])

    for rid in range(3):
        one(rid, "u1", ["a"])
    one(3, "u2", ["b", "d"])
    one(4, "u3", ["a", "c"])
    one(5, "u4", [])  # no click: not credited
    return out


def test_each_figure_on_a_small_log() -> None:
    (m,) = route_of(readout(hand_log())).multileaving
    assert (m.exposures, m.credited_exposures, m.exposure_ties) == (6, 5, 1)
    assert m.exposure_wins == pytest.approx([3.5 / 5, 1 / 5, 0.5 / 5])
    assert (m.users, m.user_prefers, m.users_tied) == (3, [1, 1, 0], 1)
    # A over B: all 5 differ, A more in 4 (u1's three, u3's), B in u2's.
    assert m.exposure_pairs[0][1] == pytest.approx(4 / 5)
    assert m.exposure_pairs[2][1] == pytest.approx(1 / 2)  # C more in u3's, B more in u2's
    assert m.exposure_pairs[0][2] == pytest.approx(1.0)  # u3's is even: left out
    assert m.user_pairs[0][1] == pytest.approx(2 / 3)  # u1, u3 more A; u2 more B
    assert m.best_by_exposure == "v1" and m.best_by_user is None and not m.agree
    # Both credit models: A ahead of B and of C, B and C even: the same sign on each pair.
    assert (m.pairs, m.pairs_agreeing) == (3, 3)
    assert [v.decision for v in m.verdicts] == ["keep running"] * 2  # 4 units: too few
    assert m.winner is None


def test_the_credit_models_can_disagree() -> None:
    """One heavy user's three lists won by A, two users' one list each won by B: A wins
    the most exposures, B the most users, and the pair A, B gets opposite signs."""
    log: list[Record] = []
    for rid, (unit, item) in enumerate([("u1", "a")] * 3 + [("u2", "b"), ("u3", "b")]):
        rec = exposure(
            f"{rid:024x}", "tri", unit, ["a", "b", "c"], T0 + rid, model=MODELS,
            teams=["A", "B", "C"],
        )  # fmt: skip
        log += [rec, event(rec, item)]
    (m,) = route_of(readout(log)).multileaving
    assert m.exposure_wins == pytest.approx([3 / 5, 2 / 5, 0.0])
    assert m.user_prefers == [1, 2, 0]
    assert (m.best_by_exposure, m.best_by_user, m.agree) == ("v1", "v2", False)
    assert m.exposure_pairs[0][1] == pytest.approx(3 / 5)
    assert m.user_pairs[0][1] == pytest.approx(1 / 3)
    assert (m.pairs, m.pairs_agreeing) == (3, 2)  # A-B opposite; A-C and B-C agree


def test_the_order_the_records_come_in_changes_nothing() -> None:
    log = multileaved_traffic(80, 2, seed=3)
    shuffled = list(log)
    random.Random(1).shuffle(shuffled)
    first = route_of(readout(log)).multileaving
    assert route_of(readout(shuffled)).multileaving == first


def test_two_models_stay_in_the_interleaving_report() -> None:
    report = route_of(readout(interleaved_traffic(200, seed=2)))
    assert report.multileaving == [] and len(report.interleaving) == 1


def test_a_label_of_more_models_than_team_letters_is_read_as_six() -> None:
    log: list[Record] = []
    label = "+".join(f"m{k}" for k in range(8))
    for rid in range(3):
        rec = exposure(
            f"{rid:024x}", "tri", f"u{rid}", ["a", "b"], T0 + rid, model=label, teams=["F", "A"]
        )
        log += [rec, event(rec, "a")]
    (m,) = route_of(readout(log)).multileaving
    assert m.models == [f"m{k}" for k in range(6)] and m.best_by_exposure == "m5"
