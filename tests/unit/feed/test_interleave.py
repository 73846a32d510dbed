"""Team-draft interleaving, on the algorithm itself: a permutation, the input when both
models agree, balanced prefixes, a fair coin, the same list for the same request id,
and fixed slots kept."""

from __future__ import annotations

import math

import numpy as np
import pytest

from proxy.feed.interleave import interleave_slots, seed_of, team_draft
from proxy.feed.state import new_request_id


def rankings(seed: int, n: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    return rng.permutation(n).tolist(), rng.permutation(n).tolist()


@pytest.mark.parametrize("seed", range(30))
def test_a_permutation_with_balanced_prefixes(seed: int) -> None:
    a, b = rankings(seed, 1 + seed)
    out, teams = team_draft(a, b, seed)
    assert sorted(out) == sorted(a)
    for k in range(1, len(out) + 1):
        n_a = teams[:k].count("A")
        assert n_a in (math.floor(k / 2), math.ceil(k / 2)), (k, teams[:k])
    # Each team's picks appear in its own model's order.
    for team, ranking in (("A", a), ("B", b)):
        mine = [i for i, t in zip(out, teams, strict=True) if t == team]
        assert mine == sorted(mine, key=ranking.index)


@pytest.mark.parametrize("seed", range(10))
def test_when_the_models_agree_it_is_their_list(seed: int) -> None:
    a, _ = rankings(seed, 25)
    assert team_draft(a, list(a), seed)[0] == a


def test_first_picks_split_evenly_and_the_same_id_gives_the_same_list() -> None:
    a, b = rankings(1, 20)
    ids = [new_request_id() for _ in range(4000)]
    firsts = [team_draft(a, b, seed_of(i))[1][0] for i in ids]
    share = firsts.count("A") / len(firsts)
    assert 0.46 < share < 0.54  # a fair coin: 4000 flips, 4 standard deviations
    assert all(team_draft(a, b, seed_of(i)) == team_draft(a, b, seed_of(i)) for i in ids[:50])
    assert len({tuple(team_draft(a, b, seed_of(i))[0]) for i in ids[:50]}) > 1


def test_fixed_items_keep_their_slots() -> None:
    # Slots 0..5; item 2 is pinned (fixed) at slot 2 in A's arrangement.
    source_a = np.array([5, 4, 2, 3, 1, 0])
    source_b = np.array([0, 1, 2, 3, 4, 5])
    fixed = np.zeros(6, dtype=bool)
    fixed[2] = True
    out, teams = interleave_slots(source_a, fixed, source_b, 7)
    assert out[2] == 2 and teams[2] is None
    assert sorted(out.tolist()) == list(range(6))
    assert teams.count("A") + teams.count("B") == 5
    # What B dropped (item 4 missing from its order) still gets a place, after B's own.
    out2, _ = interleave_slots(source_a, fixed, np.array([0, 1, 2, 3, 5]), 7)
    assert sorted(out2.tolist()) == list(range(6))
