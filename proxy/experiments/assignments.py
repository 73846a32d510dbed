"""Live assignment counts per route and arm, for ``GET /admin/experiments``.

An observer of request records: feed requests per (route, arm) since the process
started, and distinct users per arm (a bounded set of their hashes), tested against the
split ``routes.yaml`` configures (``proxy.readout.srm``). It is the live view of one process;
``rankgate experiments report`` reads the exposure log, the record of every process.
With ``--workers N`` the supervisor adds the workers' counts up (``merge``): a user whose
connections reached two workers counts on both, in the same arm.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.config.routes import Route, arm_name
from proxy.outcome.record import RequestRecord
from proxy.readout.srm import expected_split, srm_test
from proxy.routing.snapshot import Snapshot

MAX_UNITS = 200_000  # distinct users remembered in all (~60 bytes each), then no more


class Assignments:
    def __init__(self) -> None:
        self.since = time.time()
        self.requests: dict[tuple[str, str], int] = {}
        self.units: dict[tuple[str, str], set[int]] = {}
        self.remembered = 0
        self.capped = False

    def observe(self, record: RequestRecord) -> None:
        route, arm = record.route, record.arm
        if route is None or arm is None:
            return
        key = (route, arm)
        self.requests[key] = self.requests.get(key, 0) + 1
        user = record.user_id
        if user is None:
            return
        seen = self.units.get(key)
        if seen is None:
            seen = self.units[key] = set()
        h = hash(user)
        if h in seen:
            return
        if self.remembered >= MAX_UNITS:
            self.capped = True
            return
        seen.add(h)
        self.remembered += 1

    def describe(self, snapshot: Snapshot) -> dict[str, Any]:
        routes = []
        for route in snapshot.routes:
            arms = [{"arm": a["arm"], "model": a["model"]} for a in route.arms.describe()]
            for arm in arms:
                keys = [(route.name, a) for a in _counted_as(route.spec, arm["arm"])]
                arm["requests"] = sum(self.requests.get(k, 0) for k in keys)
                arm["units"] = sum(len(self.units.get(k, ())) for k in keys)
            routes.append({"route": route.name, "arms": arms, "split": expected_split(route.spec)})
        return finish({"since": self.since, "units_capped": self.capped, "routes": routes})


def _counted_as(route: Route, arm: str) -> list[str]:
    """The arm's name, or a bandit arm's per-model arms (ARM.MODEL)."""
    for j, exp in enumerate(route.experiments):
        if exp.bandit is not None and arm_name(j, exp) == arm:
            return [f"{arm}.{m}" for m in exp.bandit.models]
    return [arm]


def finish(view: dict[str, Any]) -> dict[str, Any]:
    """Each route's sample ratio test over its arms' units."""
    for route in view["routes"]:
        units = {a["arm"]: a["units"] for a in route["arms"]}
        result = srm_test(units, route["split"])
        route["srm"] = {
            "p_value": result.p_value,
            "warning": result.warning,
            "alarm": result.alarm,
            "expected": result.expected,
            "note": result.note,
        }
    return view


def merge(views: list[dict[str, Any]]) -> dict[str, Any]:
    """Several workers' views as one: counts added up, the test run on the sums."""
    merged: dict[str, dict[str, Any]] = {}
    for view in views:
        for route in view.get("routes", []):
            into = merged.setdefault(
                route["route"],
                {"route": route["route"], "split": route["split"], "arms": {}},
            )
            for arm in route["arms"]:
                slot = into["arms"].setdefault(
                    arm["arm"],
                    {"arm": arm["arm"], "model": arm["model"], "requests": 0, "units": 0},
                )
                slot["requests"] += arm["requests"]
                slot["units"] += arm["units"]
    routes = [{**r, "arms": list(r["arms"].values())} for r in merged.values()]
    return finish(
        {
            "since": min((v.get("since", 0.0) for v in views), default=0.0),
            "units_capped": any(v.get("units_capped") for v in views),
            "workers": len(views),
            # Trips are the fleet's (one Redis); the figures are the first worker's check.
            "guardrails": next((v["guardrails"] for v in views if "guardrails" in v), []),
            "bandits": next((v["bandits"] for v in views if "bandits" in v), []),
            "routes": routes,
        }
    )
