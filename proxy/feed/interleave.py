"""Team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008): one list built by
two models together, each item credited to the model (team) that placed it.

Each round, a coin decides which team picks first; each team then adds its highest
ranked item not already in the list. A click is credited to the team of the clicked
item, so the users themselves compare the two models within one list, which needs far
fewer exposures than an A/B test (``rankgate experiments report`` reads the credits).

The coin is seeded from the request id, so a list can be rebuilt from its record. With
rules plugins, each model's list is first arranged by the rules on its own scores (so
boost and diversify shape each team's ranking); the items the rules fixed (pins,
unscored items) keep their slots, dropped items are gone, and the free slots take the
interleaved list.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

TEAM_A, TEAM_B = "A", "B"


def seed_of(request_id: str) -> int:
    """The coin's seed: the request id's first 64 bits (24 hex digits in all)."""
    return int(request_id[:16] or "0", 16)


def team_draft(a: Sequence[int], b: Sequence[int], seed: int) -> tuple[list[int], list[str]]:
    """The interleaved list of two rankings of the same items, and each entry's team."""
    rng = random.Random(seed)
    placed: set[int] = set()
    out: list[int] = []
    teams: list[str] = []
    ia = ib = count_a = count_b = 0
    n = len(a)
    while len(out) < n:
        a_picks = count_a < count_b or (count_a == count_b and rng.random() < 0.5)
        if a_picks:
            while a[ia] in placed:
                ia += 1
            item, team = a[ia], TEAM_A
            count_a += 1
        else:
            while b[ib] in placed:
                ib += 1
            item, team = b[ib], TEAM_B
            count_b += 1
        placed.add(item)
        out.append(item)
        teams.append(team)
    return out, teams


def interleave_slots(
    source_a: np.ndarray, fixed: np.ndarray, source_b: np.ndarray, seed: int
) -> tuple[np.ndarray, list[str | None]]:
    """One array's served order from each model's own arrangement (``source_*``: the item
    index in each slot): A's fixed items (``fixed``, a mask over items) keep A's slots,
    the other slots take the team-draft of the two models' orders of the rest. Returns
    the item per slot and each slot's team (None for a fixed item)."""
    free = ~fixed[source_a]
    rank_a = source_a[free].tolist()
    movable = set(rank_a)
    rank_b = [i for i in source_b.tolist() if i in movable]
    if len(rank_b) < len(rank_a):  # an item B's rules dropped or fixed: after B's own
        seen = set(rank_b)
        rank_b += [i for i in rank_a if i not in seen]
    order, picked = team_draft(rank_a, rank_b, seed)
    out = source_a.copy()
    out[free] = order
    teams: list[str | None] = [None] * len(out)
    for slot, team in zip(np.flatnonzero(free).tolist(), picked, strict=True):
        teams[slot] = team
    return out, teams
