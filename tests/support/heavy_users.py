"""Traffic where users differ, for the readout's validity (bench/readout_validity.py and
tests/unit/readout/test_validity.py): each user has their own click propensity (Beta
distributed) and a heavy-tailed number of exposures (Pareto: most make one or two, a few
make 50 or more), arriving at a random time of a week and coming back until its end.

A log is read as `rankgate experiments report` reads it (proxy/readout/join.py, the same
report at cut-offs through the log), and judged three ways at each read: the test the
report used before (exposure-level two-proportion z-test, fixed horizon), the per-unit
delta method at a fixed horizon (read early all the same), and the default (per-unit,
always-valid).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import orjson

from proxy.readout.compare import ArmFigures, series, time_points
from proxy.readout.join import Readout
from proxy.readout.logreader import Event, Exposure
from proxy.readout.stats import two_proportion_z_test
from proxy.readout.verdict import Tuning
from proxy.routing.arms import bucket

ROUTE = "bench-feed"
WEEK_MS = 7 * 86_400_000
T0 = 1_795_000_000_000
TUNING = Tuning()  # rankgate.yaml's readout: defaults


def heavy_log(
    seed: int,
    users: int = 1500,
    lift: float = 0.0,
    beta: tuple[float, float] = (2.0, 8.0),
    tail: float = 1.5,
    cap: int = 100,
    salt: str | None = None,
) -> list[Exposure | Event]:
    """One log: half the users on arm ``beta`` (whose every user clicks ``1 + lift`` times
    as often), half on ``default`` (by a coin, or by the bucket under ``salt`` as a
    ``{percent: 50, salt: ...}`` arm assigns them); records in time order."""
    rng = random.Random(seed)
    out: list[Exposure | Event] = []
    for u in range(users):
        coin = rng.random() < 0.5 if salt is None else bucket(salt, f"user-{u}") < 50
        arm = "beta" if coin else "default"
        propensity = rng.betavariate(*beta)
        if arm == "beta":
            propensity = min(1.0, propensity * (1.0 + lift))
        exposures = min(cap, int(rng.paretovariate(tail)))
        start = rng.randrange(WEEK_MS)
        for k in range(exposures):
            ts = T0 + start + rng.randrange(WEEK_MS - start)
            rid = f"{seed:04x}{u:06x}{k:06x}"
            out.append(Exposure(ts, rid, ROUTE, f"user-{u}", arm, arm, "applied", None, ("a", "b")))
            if rng.random() < propensity:
                out.append(Event(ts + 1000, rid, ROUTE, arm, "a", "click"))
    out.sort(key=lambda r: r.ts)
    return out


@dataclass(frozen=True)
class Reads:
    """Per way of judging, what each read declared of beta: 1 better, -1 worse, 0 neither."""

    before: list[int]  # exposure-level z-test, p < alpha
    fixed_unit: list[int]  # per-unit delta method, fixed horizon
    always_valid: list[int]  # per-unit, confidence sequence (the default)
    final_lift: float | None


def read_log(records: list[Exposure | Event], reads: int = 8, tuning: Tuning = TUNING) -> Reads:
    """The report at ``reads`` cut-offs through the log (the last at its end)."""
    readout = Readout(route=ROUTE).add_all(records)
    report = readout.result((), tuning, points=reads)
    (route,) = report.routes
    always = [_declared(figs) for _, figs in route.over_time]
    fixed = Tuning(tuning.alpha, tuning.expected_units, tuning.min_effect, 1, tuning.min_units)
    arms = readout.arms(ROUTE)
    order = ["default", "beta"]
    points = time_points(report.first_ts, report.last_ts, reads)
    fixed_reads = [_declared(figs) for _, figs in series(arms, order, fixed, points)]
    before = []
    for t in points:
        (n0, x0), (n1, x1) = (arms[a].unit_counts(t) for a in order)
        test = two_proportion_z_test(int(x1.sum()), int(n1.sum()), int(x0.sum()), int(n0.sum()))
        significant = test is not None and test[1] < tuning.alpha
        before.append(0 if test is None or not significant else 1 if test[0] > 0 else -1)
    beta = next(a for a in route.arms if a.arm == "beta")
    return Reads(before, fixed_reads, always, beta.lift)


def _declared(figures: list[ArmFigures]) -> int:
    beta = next(f for f in figures if f.arm == "beta")
    decision = beta.verdict.decision if beta.verdict is not None else None
    return {"better": 1, "worse": -1}.get(decision or "", 0)


def write_log(path: Path, records: list[Exposure | Event]) -> Path:
    """The records as the JSONL sink writes them (docs/exposures.schema.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for r in records:
            if isinstance(r, Exposure):
                model = "ranker_v1" if r.arm == "default" else "ranker_v2"
                rec = {
                    "v": 1,
                    "type": "exposure",
                    "ts": r.ts,
                    "id": r.id,
                    "route": r.route,
                    "unit": r.unit,
                    "arm": r.arm,
                    "model": model,
                    "model_sha256": None,
                    "outcome": r.outcome,
                    "reason": None,
                    "items": list(r.items),
                    "origin_pos": list(range(len(r.items))),
                    "ms": 0.4,
                }
            else:
                rec = {
                    "v": 1,
                    "type": "event",
                    "ts": r.ts,
                    "id": r.id,
                    "route": r.route,
                    "arm": r.arm,
                    "item": r.item,
                    "kind": r.kind,
                }
            fh.write(orjson.dumps(rec) + b"\n")  # fmt: skip
    return path
