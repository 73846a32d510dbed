"""Bandits across model versions: Thompson sampling on each model's CTR by unit.

Each model's CTR by unit (a ratio of per-user sums, delta-method variance: the same
estimate as the report's, proxy/readout/sequential.py) is read as a normal posterior,
N(ctr, variance), as GrowthBook's bandits do. A model's weight is its probability of
being the best, from DRAWS joint draws (top-two Thompson: the probability of being best
or, with probability 1/2, the best once the best is taken away: more traffic to the
runner-up, a sharper answer which one wins). Then every model gets at least
``min_share`` and the rest is shared by those probabilities; until each model has
``burn_in`` exposures the weights stay equal.

A user keeps one model within a weight period: the sticky hash of
proxy/routing/arms.py with the period in the salt, mapped onto the period's cumulative
weights. A list and its clicks therefore belong to one model, and a new period may move
a user (as the weights move).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from proxy.readout.sequential import Ratio
from proxy.routing.arms import bucket

__all__ = ["DRAWS", "BanditSpec", "assign", "weights"]

DRAWS = 10_000


@dataclass(frozen=True)
class BanditSpec:
    models: tuple[str, ...]
    min_share: float = 0.05
    burn_in: int = 500  # exposures per model before the weights move
    top_two: bool = False


def _floor(p: np.ndarray, min_share: float) -> np.ndarray:
    """Shares of at least ``min_share`` each, the rest by ``p``."""
    k = len(p)
    spare = max(0.0, 1.0 - k * min_share)
    total = float(p.sum())
    p = p / total if total > 0 else np.full(k, 1.0 / k)
    return min_share + spare * p


def weights(
    spec: BanditSpec,
    posteriors: Sequence[Ratio | None],
    exposures: Sequence[int],
    rng: np.random.Generator,
) -> list[float]:
    """The next period's weights, one per model of ``spec``, from each model's CTR by unit
    and its exposures so far: equal until every model has ``burn_in``."""
    k = len(spec.models)
    ready = [r for r in posteriors if r is not None and r.variance is not None]
    if len(ready) < k or not burnt_in(spec, exposures):
        return [1.0 / k] * k
    means = np.array([r.ratio for r in ready])
    sds = np.sqrt([max(r.variance or 0.0, 1e-12) for r in ready])
    draws = rng.normal(means, sds, size=(DRAWS, k))
    best = np.argmax(draws, axis=1)
    p = np.bincount(best, minlength=k) / DRAWS
    if spec.top_two:
        draws[np.arange(DRAWS), best] = -np.inf
        second = np.bincount(np.argmax(draws, axis=1), minlength=k) / DRAWS
        p = 0.5 * p + 0.5 * second
    return [float(w) for w in _floor(p, spec.min_share)]


def burnt_in(spec: BanditSpec, exposures: Sequence[int]) -> bool:
    return all(n >= spec.burn_in for n in exposures)


def assign(salt: str, period: int, user: str, shares: Sequence[float]) -> int:
    """The index of the user's model in a period with these weights (sticky within it)."""
    u = bucket(f"{salt}:{period}", user) / 100.0
    edge = 0.0
    for i, w in enumerate(shares):
        edge += w
        if u < edge:
            return i
    return len(shares) - 1
