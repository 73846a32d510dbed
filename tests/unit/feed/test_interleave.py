"""Team-draft interleaving, on the algorithm itself: a permutation, the input when both
models agree, balanced prefixes, a fair coin, the same list for the same request id,
and fixed slots kept; and multileaving of k models: fair prefixes, a fair first pick,
the same list for a seed, and for two models the very lists interleaving gave before."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import pytest

from proxy.feed.interleave import (
    interleave_slots,
    multileave,
    multileave_slots,
    seed_of,
    team_draft,
)
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


def two_team_draft_before(a: Sequence[int], b: Sequence[int], seed: int) -> list[int]:
    """team_draft as it was before multileaving (one coin when the counts are even):
    the reference a two-model list must still equal, so old records rebuild."""
    rng = random.Random(seed)
    placed: set[int] = set()
    out: list[int] = []
    ia = ib = count_a = count_b = 0
    while len(out) < len(a):
        if count_a < count_b or (count_a == count_b and rng.random() < 0.5):
            while a[ia] in placed:
                ia += 1
            out.append(a[ia])
            count_a += 1
        else:
            while b[ib] in placed:
                ib += 1
            out.append(b[ib])
            count_b += 1
        placed.add(out[-1])
    return out


@pytest.mark.parametrize("seed", range(200))
def test_two_models_give_the_lists_they_gave_before(seed: int) -> None:
    a, b = rankings(seed, 1 + seed % 41)
    key = seed_of(f"{random.Random(seed).getrandbits(96):024x}")
    assert team_draft(a, b, key)[0] == two_team_draft_before(a, b, key)
    assert multileave([a, b], key)[0] == two_team_draft_before(a, b, key)


def k_rankings(seed: int, n: int, k: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(n).tolist() for _ in range(k)]


@pytest.mark.parametrize("k", [3, 4, 5, 6])
@pytest.mark.parametrize("seed", range(15))
def test_k_teams_share_every_prefix_fairly_each_in_its_own_order(k: int, seed: int) -> None:
    ranks = k_rankings(seed, 1 + 3 * seed, k)
    out, teams = multileave(ranks, seed)
    assert sorted(out) == sorted(ranks[0])
    letters = "ABCDEF"[:k]
    assert set(teams) <= set(letters)
    for n in range(1, len(out) + 1):
        for t in letters:
            assert teams[:n].count(t) in (n // k, math.ceil(n / k)), (n, t, teams[:n])
    for t, ranking in zip(letters, ranks, strict=True):
        mine = [i for i, team in zip(out, teams, strict=True) if team == t]
        assert mine == sorted(mine, key=ranking.index)
        # Each pick is the team's best item not placed before it.
        for item in mine:
            before = set(out[: out.index(item)])
            assert item == next(i for i in ranking if i not in before)


def test_k_teams_pick_first_equally_often_and_a_seed_gives_one_list() -> None:
    ranks = k_rankings(2, 20, 3)
    ids = [new_request_id() for _ in range(6000)]
    firsts = [multileave(ranks, seed_of(i))[1][0] for i in ids]
    for t in "ABC":
        # 6000 draws of 1/3: a standard deviation of 0.0061; 4 of them either side
        assert 0.30 < firsts.count(t) / len(firsts) < 0.37, t
    assert all(multileave(ranks, seed_of(i)) == multileave(ranks, seed_of(i)) for i in ids[:50])
    assert len({tuple(multileave(ranks, seed_of(i))[0]) for i in ids[:50]}) > 1


def test_k_models_that_agree_give_their_list() -> None:
    (a,) = k_rankings(4, 30, 1)
    assert multileave([a, list(a), list(a), list(a)], 9)[0] == a


def test_multileaved_slots_keep_the_fixed_items_and_place_what_a_model_dropped() -> None:
    source_a = np.array([5, 4, 2, 3, 1, 0, 6])
    fixed = np.zeros(7, dtype=bool)
    fixed[2] = True
    others = [np.array([0, 1, 2, 3, 4, 5, 6]), np.array([6, 3, 0, 5])]  # C dropped 1, 2, 4
    out, teams = multileave_slots(source_a, fixed, others, 11)
    assert out[2] == 2 and teams[2] is None
    assert sorted(out.tolist()) == list(range(7))
    assert sorted(t for t in teams if t) == sorted("AABBCC")
    assert interleave_slots(source_a, fixed, others[0], 11)[0].tolist() == (
        multileave_slots(source_a, fixed, others[:1], 11)[0].tolist()
    )
