"""proxy/readout/periods.py: a bandit's models compared on their CTR weighted by period
(not credited for a rise every model shared), and the sample ratio test of each period
against its own weights, on generated bandit logs."""

from __future__ import annotations

import orjson

from proxy.readout.compare import compare_arms
from proxy.readout.join import Readout
from proxy.readout.logreader import parse_record
from proxy.readout.periods import BanditReport
from proxy.readout.verdict import Tuning
from proxy.routing.arms import bucket
from tests.support.bandit_logs import (
    ARM,
    SALT,
    Period,
    bandit_log,
    bandit_route,
)
from tests.support.exposure_logs import T0, Record, event, exposure, readout, request_id, route_of

TWO = ("v1", "v2")
# What a log of this size can bound: "no difference" = the lift within +-20%.
WIDE = Tuning(min_effect=0.2, expected_units=20_000)


def the_bandit(records: list[Record], tuning: Tuning = WIDE) -> BanditReport:
    (b,) = route_of(readout(records, [bandit_route(models=TWO)], tuning=tuning)).bandits
    return b


def simpson(seed: int) -> list[Record]:
    """v2 gains 90% of the traffic in the second period, when every model's CTR triples."""
    return bandit_log(
        [Period([0.5, 0.5], [0.05, 0.05]), Period([0.1, 0.9], [0.15, 0.15])],
        users_per_period=12_000,
        seed=seed,
        models=TWO,
    )


def test_a_model_that_gained_traffic_while_all_rose_is_not_credited() -> None:
    records = simpson(seed=3)
    parsed = [parse_record(orjson.dumps(r)) for r in records]
    read = Readout().add_all(parsed)
    read.result([bandit_route(models=TWO)], WIDE)
    arms = read.arms("home-feed")
    # Pooled over the periods (v1 as the baseline, the arms' machinery): "better".
    pooled = {"default": arms[f"{ARM}.v1"], f"{ARM}.v2": arms[f"{ARM}.v2"]}
    _, v2_pooled = compare_arms(pooled, ["default", f"{ARM}.v2"], WIDE)
    assert v2_pooled.verdict is not None and v2_pooled.verdict.decision == "better"
    assert v2_pooled.lift is not None and v2_pooled.lift > 0.3
    # Weighted by period: each period's CTRs are the same for both models.
    b = the_bandit(records)
    v1, v2 = b.results
    assert v1.decision is None and v2.decision == "no difference", v2.reason
    assert v2.lift is not None and abs(v2.lift) < 0.1
    assert v1.weighted_ctr is not None and 0.09 < v1.weighted_ctr < 0.11
    assert [p.share for p in b.periods] == [p.share for p in b.periods if p.share]
    first, second = b.periods
    assert first.share is not None and second.share is not None
    assert abs(first.share + second.share - 1) < 1e-12
    assert [m.weight for m in second.models] == [0.1, 0.9]


def test_a_model_that_truly_does_better_is_found_better() -> None:
    records = bandit_log(
        [Period([0.5, 0.5], [0.05, 0.10]), Period([0.2, 0.8], [0.05, 0.10])],
        users_per_period=6000,
        seed=8,
        models=TWO,
    )
    v1, v2 = the_bandit(records).results
    assert v2.decision == "better", v2.reason
    assert v2.lift is not None and 0.7 < v2.lift < 1.3
    assert v2.lift_ci is not None and v2.lift_ci[0] > 0.3
    assert v1.weighted_ctr_ci is not None and v1.weighted_ctr_ci[1] < 0.07


def test_holm_across_the_models_and_too_few_units_wait() -> None:
    three = bandit_log([Period([1 / 3] * 3, [0.1, 0.1, 0.2])], users_per_period=6000, seed=2)
    (b,) = route_of(readout(three, [bandit_route()], tuning=WIDE)).bandits
    _, v2, v3 = b.results
    assert v3.decision == "better" and v2.decision != "better"
    assert v3.p_value is not None and v3.p_value_unadjusted is not None
    assert v3.p_value >= v3.p_value_unadjusted  # adjusted with v2's
    small = bandit_log([Period([0.5, 0.5], [0.1, 0.3])], users_per_period=60, seed=2, models=TWO)
    _, v2 = the_bandit(small).results
    assert v2.decision == "keep running" and "min_units" in (v2.reason or "")


SHIFTING = [
    Period([1 / 3] * 3, [0.05, 0.1, 0.2]),
    Period([0.2, 0.3, 0.5], [0.05, 0.1, 0.2]),
    Period([0.05, 0.15, 0.8], [0.05, 0.1, 0.2]),
]


def test_sample_ratio_per_period_holds_for_a_correct_log() -> None:
    alarms = 0
    for seed in range(6):
        (b,) = route_of(readout(bandit_log(SHIFTING, 1500, seed), [bandit_route()])).bandits
        assert b.srm.p_value is not None and b.srm.df == 2 * len(SHIFTING)
        alarms += b.srm.alarm + sum(p.srm.alarm for p in b.periods)
    assert alarms == 0


def test_sample_ratio_alarms_when_one_period_is_assigned_wrongly() -> None:
    broken = [*SHIFTING]
    broken[1] = Period([0.2, 0.3, 0.5], [0.05, 0.1, 0.2], assigned=[1 / 3] * 3)
    for seed in range(3):
        (b,) = route_of(readout(bandit_log(broken, 1500, seed), [bandit_route()])).bandits
        assert b.srm.alarm, b.srm
        assert [p.srm.alarm for p in b.periods] == [False, True, False]


def test_a_unit_in_two_periods_counts_in_each() -> None:
    records = bandit_log(SHIFTING, 1000, seed=1, pool=1200)
    (b,) = route_of(readout(records, [bandit_route()])).bandits
    units = {r["unit"] for r in records if r["type"] == "exposure"}
    assert sum(b.srm.observed.values()) == 3 * 1000 > len(units)
    assert sum(m.units for m in b.periods[0].models) == 1000


def test_records_whose_period_says_other_weights_are_left_out() -> None:
    records = bandit_log([Period([0.5, 0.5], [0.1, 0.1])], 200, seed=1, models=TWO)
    odd = exposure(request_id(__import__("random").Random(1)), f"{ARM}.v1", "x", ["a"], T0)
    odd["bandit"] = {"arm": ARM, "period": 1000, "models": list(TWO), "weights": [0.4, 0.6]}
    b = the_bandit([*records, odd])
    assert b.mismatched == 1
    assert sum(m.exposures for m in b.periods[0].models) == sum(
        1 for r in records if r["type"] == "exposure"
    )


def test_the_route_sample_ratio_counts_a_bandit_arm_by_its_models_units() -> None:
    """The arms' test: a bandit at 50% of users, its units those of its models (a unit
    served by two models counted once)."""
    rng = __import__("random").Random(4)
    records = bandit_log(SHIFTING, 1500, seed=4, pool=3000)
    inside = {r["unit"] for r in records if r["type"] == "exposure"}
    records = [r for r in records if r["type"] == "event" or bucket(SALT, r["unit"]) < 50]
    for k in range(3000):
        unit = f"u{k}"
        if unit in inside and bucket(SALT, unit) >= 50:
            rec = exposure(request_id(rng), "default", unit, ["a"], T0)
            records.append(rec)
            if rng.random() < 0.1:
                records.append(event(rec, "a"))
    r = route_of(readout(records, [bandit_route(percent=50)]))
    assert r.srm is not None and r.srm.p_value is not None and not r.srm.warning, r.srm
    distinct = {x["unit"] for x in records if x["type"] == "exposure" and x["arm"] != "default"}
    assert r.srm.observed[ARM] == len(distinct)
