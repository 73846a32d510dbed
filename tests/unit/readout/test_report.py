"""proxy/readout/report.py: the arms' CTR, lift and p-value on simulated A/B logs, the
sample ratio test against the split in routes.yaml, and the shape of the JSON."""

from __future__ import annotations

import random

import orjson
import pytest

from proxy.readout.verdict import Tuning
from tests.support.exposure_logs import (
    T0,
    Record,
    event,
    exposure,
    home_feed,
    percent_traffic,
    readout,
    request_id,
    route_of,
)

RNG = random.Random(5)


def two_arms(default_ctr: float, beta_ctr: float, n: int = 4000, seed: int = 11) -> list[Record]:
    rng = random.Random(seed)
    records: list[Record] = []
    for i in range(n):
        arm, ctr = ("beta", beta_ctr) if i % 2 else ("default", default_ctr)
        rec = exposure(request_id(rng), arm, f"u{i}", ["a", "b", "c"], T0 + i)
        records.append(rec)
        if rng.random() < ctr:
            records.append(event(rec, rng.choice("abc")))
    return records


def test_arm_that_truly_gets_more_clicks_wins() -> None:
    default, beta = route_of(readout(two_arms(0.10, 0.15))).arms
    assert default.ctr == pytest.approx(0.10, abs=0.015)
    assert beta.ctr == pytest.approx(0.15, abs=0.015)
    assert beta.lift is not None and beta.lift > 0.2
    assert beta.p_value is not None and beta.p_value < 0.05
    assert beta.ctr_ci[0] > default.ctr
    worse = route_of(readout(two_arms(0.15, 0.10))).arms[1]
    assert worse.lift is not None and worse.lift < -0.2 and (worse.p_value or 1) < 0.05


def test_equal_arms_are_rarely_significant() -> None:
    # Under equal rates the fixed-horizon p-value is uniform: about 5% of logs fall
    # under 0.05. The always-valid p is larger (it holds at every read): fewer still.
    fixed = Tuning(planned_units=800)
    ps, always = [], []
    for s in range(40):
        log = two_arms(0.1, 0.1, n=800, seed=s)
        ps.append(route_of(readout(log, tuning=fixed)).arms[1].p_value)
        always.append(route_of(readout(log)).arms[1].p_value)
    assert all(p is not None for p in ps + always)
    false_alarms = sum(p < 0.05 for p in ps if p is not None)
    assert false_alarms <= 6, false_alarms
    assert 0.35 < sum(p for p in ps if p is not None) / len(ps) < 0.65
    assert sum(p < 0.05 for p in always if p is not None) <= false_alarms
    assert all(a >= p for a, p in zip(always, ps, strict=True))  # type: ignore[operator]


def test_sample_ratio_fair_and_skewed() -> None:
    routes = [
        home_feed(
            {"name": "beta-header", "when": {"header": {"X-Beta": "true"}}, "model": "ranker_v2"},
            {"name": "beta", "when": {"percent": 50, "salt": "spring"}, "model": "ranker_v2"},
        )
    ]
    fair = percent_traffic(4000, seed=1, salt="spring", percent=50)
    # Header-arm and user-less exposures are outside the split and do not count.
    extra = [exposure(request_id(RNG), "beta-header", f"h{i}", ["a"], T0) for i in range(300)]
    extra += [exposure(request_id(RNG), "default", None, ["a"], T0) for i in range(300)]
    srm = route_of(readout(fair + extra, routes)).srm
    assert srm is not None and srm.p_value is not None
    assert srm.split == {"beta": 0.5, "default": 0.5}
    assert sum(srm.observed.values()) == 4000
    assert not srm.alarm and not srm.warning and srm.p_value > 0.05
    # A bug that loses 10% of beta's exposures (e.g. its redirect drops the log).
    lossy = percent_traffic(
        4000,
        seed=1,
        salt="spring",
        percent=50,
        keep=lambda unit, arm: arm != "beta" or int(unit[5:]) % 10 != 0,
    )
    skewed = route_of(readout(lossy, routes)).srm
    assert skewed is not None and skewed.alarm and skewed.p_value < 0.001


def test_sample_ratio_counts_distinct_units_and_needs_two_arms() -> None:
    routes = [home_feed({"name": "beta", "when": {"percent": 10}, "model": "ranker_v2"})]
    # Ten exposures each for 100 units on default: still 100 units.
    many = [exposure(request_id(RNG), "default", f"u{i % 100}", ["a"], T0) for i in range(1000)]
    srm = route_of(readout(many, routes)).srm
    assert srm is not None and srm.observed == {"beta": 0, "default": 100}
    assert srm.expected == pytest.approx({"beta": 10.0, "default": 90.0})
    no_split = route_of(readout(many, [home_feed()])).srm
    assert no_split is not None and no_split.p_value is None and "fewer than two" in no_split.note


def test_json_shape() -> None:
    records = percent_traffic(200, seed=2, salt="s", percent=50)
    records.append(event(records[0], "a"))
    routes = [
        home_feed({"name": "beta", "when": {"percent": 50, "salt": "s"}, "model": "ranker_v2"})
    ]
    body = readout(records, routes).to_json()
    orjson.dumps(body)  # serializable as it is
    (route,) = body["routes"]
    assert set(route) >= {"route", "srm", "arms", "interleaving", "shadow"}
    assert set(route["srm"]) >= {"p_value", "alarm", "warning", "expected", "observed"}
    assert set(route["arms"][0]) >= {
        "arm",
        "model",
        "exposures",
        "applied_share",
        "skip_reasons",
        "clicks",
        "ctr",
        "ctr_ci",
        "lift",
        "lift_ci",
        "p_value",
        "p_value_unadjusted",
        "decision",
        "reason",
        "mrr",
    }
    assert isinstance(route["arms"][0]["ctr_ci"], list)
    assert route["arms"][0]["decision"] is None  # the default arm is the baseline
    assert route["arms"][1]["decision"] in ("keep running", "better", "worse", "no difference")
    assert body["method"]["inference"] == "sequential" and body["method"]["alpha"] == 0.05
    assert body["records"]["exposures"] == 200 and body["records"]["events"] == 1
