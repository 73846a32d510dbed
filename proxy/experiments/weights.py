"""A bandit's live weights: recomputed every ``update_s`` from the fleet's exposures and
clicks, the same for every process, and the model each user gets in the current period.

Periods are numbered by the clock (``int(time / update_s)``). At a new period the first
process to notice computes the weights from the shared counts (each model's CTR by unit,
proxy/experiments/bandit.py) and stores them with the period; the others read them at
their next poll (0.5 s). Every process assigns users with the stored period and weights
(never its own clock), so a user keeps one model within a period, fleet-wide, except for
at most one poll at the turn of a period. Each model is counted as its own arm,
``EXPERIMENT.MODEL`` (in X-Rerank, metrics and exposure records); its exposure records
also carry the period and its weights (``tag``), which the report weighs and tests
period by period (proxy/readout/periods.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from proxy.config.bandit import Bandit
from proxy.config.routes import Route, arm_name
from proxy.experiments.bandit import BanditSpec, assign, weights
from proxy.experiments.guardstore import GuardStore, field_of
from proxy.experiments.guardtest import ArmCounts
from proxy.routing.arms import Arm, default_salt

__all__ = ["Bandits", "bandit_arms", "model_arm"]

HISTORY = 100  # periods kept in the stored history
TAG_DIGITS = 4  # of the weights an exposure record carries


def model_arm(arm: str, model: str) -> str:
    """The arm a bandit's model is counted and reported as."""
    return f"{arm}.{model}"


def bandit_arms(route: Route) -> Iterator[tuple[str, Bandit, str]]:
    """(arm, its bandit, its salt) for each bandit experiment of the route."""
    for j, exp in enumerate(route.experiments):
        if exp.bandit is not None:
            name = arm_name(j, exp)
            salt = exp.when.salt if exp.when.salt is not None else default_salt(route.name, name)
            yield name, exp.bandit, salt


class Bandits:
    def __init__(self, seed: int | None = None) -> None:
        self.states: dict[str, dict[str, Any]] = {}  # "ROUTE ARM" -> the stored state
        self.salts: dict[str, str] = {}
        self._arms: dict[tuple[str, str, str], Arm] = {}
        # "ROUTE ARM" -> (the state it was made from, the current period's tag)
        self._tags: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.rng = np.random.default_rng(seed)
        self.clock = time.time  # what numbers the periods

    def pick(self, route: str, arm: Arm, user: str | None) -> Arm:
        """The arm of the model this user gets in the current period (a bandit arm), or
        ``arm`` itself (any other arm)."""
        key = field_of(route, arm.name)
        salt = self.salts.get(key)
        if salt is None:
            return arm
        state = self.states[key]
        models = state["models"]
        model = models[assign(salt, state["period"], user or "", state["weights"])]
        sub = self._arms.get((route, arm.name, model))
        if sub is None:
            sub = Arm(model_arm(arm.name, model), model, shadow=arm.shadow)
            self._arms[(route, arm.name, model)] = sub
        return sub

    def tag(self, route: str, arm: str) -> dict[str, Any] | None:
        """What an exposure record of a bandit arm carries (``bandit``): the arm, the
        period the user was assigned in, its models and weights; the report weighs each
        period apart and tests each period's split from the log alone. One dict per
        period, shared by its records."""
        key = field_of(route, arm)
        state = self.states.get(key)
        if state is None:
            return None
        made = self._tags.get(key)
        if made is not None and made[0] is state:
            return made[1]
        tag = {
            "arm": arm,
            "period": state["period"],
            "models": state["models"],
            # Four digits: a record stays short, and a sample ratio test is none the worse.
            "weights": [round(w, TAG_DIGITS) for w in state["weights"]],
        }
        self._tags[key] = (state, tag)
        return tag

    def prepare(self, routes: Iterable[Route]) -> None:
        """Equal weights for a bandit not read from the fleet yet (at start, after a
        reload), so that its users are spread from the first request; removed ones go."""
        states, salts = {}, {}
        for route in routes:
            for arm, cfg, salt in bandit_arms(route):
                key = field_of(route.name, arm)
                state = self.states.get(key)
                if state is None or state.get("models") != list(cfg.models):
                    state = _equal(cfg)
                states[key], salts[key] = state, salt
        self.states, self.salts = states, salts

    async def update(self, store: GuardStore, routes: Iterable[Route]) -> None:
        """Read the fleet's weights; at a new period, compute and store them."""
        stored = await store.bandits()
        states, salts = {}, {}
        for route in routes:
            for arm, cfg, salt in bandit_arms(route):
                key = field_of(route.name, arm)
                state = stored.get(key)
                if state is None or list(state.get("models", [])) != list(cfg.models):
                    state = _equal(cfg)
                period = int(self.clock() // cfg.update_s)
                if state["period"] < period:
                    new = await self._next(store, route.name, arm, cfg, state, period)
                    if await store.put_bandit(key, period, new):
                        state = new
                states[key], salts[key] = state, salt
        self.states, self.salts = states, salts

    async def _next(
        self, store: GuardStore, route: str, arm: str, cfg: Bandit, old: dict[str, Any], period: int
    ) -> dict[str, Any]:
        counts = [
            ArmCounts.from_hash(await store.counts(route, f"{model_arm(arm, m)}:0"))
            for m in cfg.models
        ]
        ratios = [c.ctr() for c in counts]
        spec = BanditSpec(cfg.models, cfg.min_share, cfg.burn_in, cfg.top_two)
        shares = weights(spec, ratios, [c.n for c in counts], self.rng)
        posteriors = [
            {
                "model": m,
                "units": c.units,
                "exposures": c.n,
                "clicked": c.x,
                "ctr": r.ratio if r else None,
                "sd": float(np.sqrt(r.variance)) if r and r.variance is not None else None,
            }
            for m, c, r in zip(cfg.models, counts, ratios, strict=True)
        ]
        # Counts so far (exposures, clicked) per model: the differences between two
        # entries are one period's, which the report weighs period by period.
        entry = {
            "period": period,
            "at": round(self.clock(), 3),
            "weights": shares,
            "counts": [[c.n, c.x] for c in counts],
        }
        history = [*old.get("history", []), entry][-HISTORY:]
        return {
            "period": period,
            "weights": shares,
            "models": list(cfg.models),
            "history": history,
            "posteriors": posteriors,
            "update_s": cfg.update_s,
        }

    def describe(self) -> list[dict[str, Any]]:
        """Each bandit: its current weights, their history, each model's posterior."""
        out = []
        for key, state in self.states.items():
            route, arm = key.split(" ", 1)
            out.append({"route": route, "arm": arm, **state})
        return out


def _equal(cfg: Bandit) -> dict[str, Any]:
    k = len(cfg.models)
    return {"period": 0, "weights": [1 / k] * k, "models": list(cfg.models), "history": []}
