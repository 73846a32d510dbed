"""Team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008) and its extension to
more than two models, team-draft multileaving (Schuth et al., "Multileaved comparisons
for fast online evaluation", CIKM 2014): one list built by k models together, each item
credited to the model (team) that placed it.

Each round, the teams that have picked the fewest so far pick in a random order, each
adding its highest ranked item not already in the list; so within any prefix of n slots
each team has placed floor(n/k) or ceil(n/k). A click is credited to the team of the
clicked item, so the users themselves compare the models within one list, which needs
far fewer exposures than an A/B test (``rankgate experiments report`` reads the credits).
Teams are the letters A, B, C, ... in the configured order of the models.

The order is seeded from the request id, so a list can be rebuilt from its record. For
two models each round draws one number (A first when it is below 0.5), so a two-model
list is the one team-draft interleaving always gave. With rules plugins, each model's
list is first arranged by the rules on its own scores (so boost and diversify shape each
team's ranking); the items the rules fixed (pins, unscored items) keep the first model's
slots, dropped items are gone, and the free slots take the multileaved list.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

TEAMS = "ABCDEF"  # one letter per model, in the configured order (at most 6 models)
TEAM_A, TEAM_B = TEAMS[0], TEAMS[1]


def seed_of(request_id: str) -> int:
    """The order's seed: the request id's first 64 bits (24 hex digits in all)."""
    return int(request_id[:16] or "0", 16)


def _round_order(k: int, draw: Callable[[], float]) -> Sequence[int]:
    """The teams of one round in a random order: each next team drawn from those left
    (in team order) by one number; none drawn for the last, so two teams take one draw
    and A goes first when it is below 0.5, as the two-team coin always did."""
    if k == 2:  # the common case, without a list to build
        return _AB if draw() < 0.5 else _BA
    left = list(range(k))
    order = []
    while len(left) > 1:
        order.append(left.pop(int(draw() * len(left))))
    return order + left


_AB, _BA = (0, 1), (1, 0)


def multileave(rankings: Sequence[Sequence[int]], seed: int) -> tuple[list[int], list[str]]:
    """The multileaved list of k rankings of the same items, and each entry's team."""
    draw = random.Random(seed).random
    k, n = len(rankings), len(rankings[0])
    placed: set[int] = set()
    next_of = [0] * k  # per team, the index of its best item that may be unplaced
    out: list[int] = []
    teams: list[str] = []
    while len(out) < n:
        # Every team has placed as many as the others at a round's start: all pick.
        for team in _round_order(k, draw):
            ranking, i = rankings[team], next_of[team]
            while ranking[i] in placed:
                i += 1
            next_of[team] = i + 1
            placed.add(ranking[i])
            out.append(ranking[i])
            teams.append(TEAMS[team])
            if len(out) == n:
                break
    return out, teams


def team_draft(a: Sequence[int], b: Sequence[int], seed: int) -> tuple[list[int], list[str]]:
    """The interleaved list of two rankings of the same items, and each entry's team."""
    return multileave([a, b], seed)


def multileave_slots(
    source_a: np.ndarray, fixed: np.ndarray, others: Sequence[np.ndarray], seed: int
) -> tuple[np.ndarray, list[str | None]]:
    """One array's served order from each model's own arrangement (``source_a``, then
    ``others`` in team order: the item index in each slot): A's fixed items (``fixed``, a
    mask over items) keep A's slots, the other slots take the multileaved list of the
    models' orders of the rest. Returns the item per slot and each slot's team (None for
    a fixed item)."""
    free = ~fixed[source_a]
    rank_a = source_a[free].tolist()
    movable = set(rank_a)
    rankings = [rank_a]
    for source in others:
        rank = [i for i in source.tolist() if i in movable]
        if len(rank) < len(rank_a):  # an item this model's rules dropped or fixed: last
            seen = set(rank)
            rank += [i for i in rank_a if i not in seen]
        rankings.append(rank)
    order, picked = multileave(rankings, seed)
    out = source_a.copy()
    out[free] = order
    teams: list[str | None] = [None] * len(out)
    for slot, team in zip(np.flatnonzero(free).tolist(), picked, strict=True):
        teams[slot] = team
    return out, teams


def interleave_slots(
    source_a: np.ndarray, fixed: np.ndarray, source_b: np.ndarray, seed: int
) -> tuple[np.ndarray, list[str | None]]:
    """Two models' :func:`multileave_slots`."""
    return multileave_slots(source_a, fixed, [source_b], seed)
