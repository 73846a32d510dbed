"""Generated exposure logs of a bandit experiment: per weight period, users assigned to a
model by the sticky hash over the period's weights (proxy/experiments/bandit.py's
``assign``, as the proxy does), a click rate per model and period, and records that carry
the period and its weights (``bandit`` in docs/exposures.md)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.config.routes import Route
from proxy.experiments.bandit import assign
from tests.support.exposure_logs import T0, Record, event, exposure, home_feed, request_id

ARM = "versions"
SALT = "versions-salt"
MODELS = ("v1", "v2", "v3")


@dataclass(frozen=True)
class Period:
    weights: Sequence[float]
    rates: Sequence[float]  # each model's click rate in this period
    # The weights users were really assigned with, when not the ones recorded (a broken
    # assignment: what the sample ratio test is for).
    assigned: Sequence[float] | None = None


def bandit_route(percent: float = 100, models: Sequence[str] = MODELS) -> Route:
    return home_feed(
        {
            "name": ARM,
            "when": {"percent": percent, "salt": SALT},
            "bandit": {"models": list(models), "update_s": 60},
        }
    )


def bandit_log(
    periods: Sequence[Period],
    users_per_period: int,
    seed: int,
    models: Sequence[str] = MODELS,
    pool: int | None = None,
    first: int = 1000,
) -> list[Record]:
    """Each period: ``users_per_period`` users drawn from a pool (so units recur across
    periods), each with one to three exposures, clicked at their model's rate."""
    rng = random.Random(seed)
    pool = pool or users_per_period * 2
    records: list[Record] = []
    for j, p in enumerate(periods):
        number = first + j
        weights = [round(w, 4) for w in p.weights]  # as the proxy writes them
        tag = {"arm": ARM, "period": number, "models": list(models), "weights": weights}
        for user in rng.sample(range(pool), users_per_period):
            unit = f"u{user}"
            k = assign(SALT, number, unit, p.assigned or p.weights)
            for _ in range(rng.randint(1, 3)):
                ts = T0 + j * 60_000 + rng.randrange(60_000)
                rec = exposure(
                    request_id(rng), f"{ARM}.{models[k]}", unit, ["a", "b", "c"], ts,
                    model=models[k],
                )  # fmt: skip
                rec["bandit"] = tag
                records.append(rec)
                if rng.random() < p.rates[k]:
                    records.append(event(rec, rng.choice("abc")))
    return records
