"""proxy/readout/stats.py against published values (statistical tables, Newcombe 1998) and exact
arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from proxy.readout.stats import (
    SIGN_TEST_EXACT_MAX,
    Z95,
    chi2_sf,
    chi_square_gof,
    holm_adjust,
    kendall_tau,
    normal_cdf,
    normal_quantile,
    normal_sf,
    sign_test,
    top_k_overlap,
    two_proportion_z_test,
    wilson_interval,
)


def test_normal_cdf_known_values() -> None:
    assert normal_cdf(0.0) == 0.5
    assert normal_cdf(Z95) == pytest.approx(0.975, abs=1e-12)
    assert normal_cdf(-1.0) == pytest.approx(0.15865525393145707, rel=1e-12)
    assert normal_sf(3.0) == pytest.approx(0.0013498980316300946, rel=1e-12)
    # The far tail keeps its relative precision (1 - cdf would give 0).
    assert normal_sf(10.0) == pytest.approx(7.619853024160527e-24, rel=1e-9)


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841458820694124, 1, 0.05),
        (6.634896601021213, 1, 0.01),
        (10.827566170662733, 1, 0.001),
        (5.991464547107979, 2, 0.05),
        (7.814727903251178, 3, 0.05),
        (9.487729036781154, 4, 0.05),
        (11.070497693516351, 5, 0.05),
        (18.307038053275146, 10, 0.05),
        (124.34211340400407, 100, 0.05),  # many df: the log-space sum holds
        (135.80672317102676, 100, 0.01),
    ],
)
def test_chi2_sf_table_values(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9)


def test_chi2_sf_closed_forms_and_edges() -> None:
    assert chi2_sf(2.0, 2) == pytest.approx(math.exp(-1.0), rel=1e-15)
    assert chi2_sf(4.0, 1) == pytest.approx(math.erfc(math.sqrt(2.0)), rel=1e-15)
    assert chi2_sf(0.0, 3) == 1.0
    assert chi2_sf(-1.0, 3) == 1.0
    assert 0.0 <= chi2_sf(5000.0, 7) < 1e-300
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)


@pytest.mark.parametrize(
    ("x", "n", "lo", "hi"),
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (Wilson score).
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_newcombe(x: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(x, n)
    assert got is not None
    assert got[0] == pytest.approx(lo, abs=5e-5)
    assert got[1] == pytest.approx(hi, abs=5e-5)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) is None
    assert wilson_interval(20, 20) == (pytest.approx(1 - 0.1611, abs=5e-5), 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_two_proportion_z_matches_the_2x2_chi_square() -> None:
    # 120/1000 vs 150/1000: z^2 is Pearson's chi-square of the 2x2 table, no correction.
    z, p = two_proportion_z_test(120, 1000, 150, 1000) or (0.0, 0.0)
    a, b, c, d = 120, 880, 150, 850
    n = a + b + c + d
    chi2 = n * (a * d - b * c) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))
    assert z == pytest.approx(-math.sqrt(chi2), rel=1e-12)
    assert p == pytest.approx(chi2_sf(chi2, 1), rel=1e-12)
    assert p == pytest.approx(0.04964, abs=1e-5)
    assert two_proportion_z_test(150, 1000, 120, 1000) == (pytest.approx(-z), pytest.approx(p))


def test_two_proportion_z_without_variance() -> None:
    assert two_proportion_z_test(0, 10, 0, 10) is None
    assert two_proportion_z_test(10, 10, 5, 5) is None
    assert two_proportion_z_test(1, 0, 1, 10) is None
    assert two_proportion_z_test(5, 10, 5, 10) == (0.0, 1.0)


def test_chi_square_gof() -> None:
    assert chi_square_gof([50, 50], [0.5, 0.5]) == (0.0, 1, 1.0)
    stat, df, p = chi_square_gof([60, 40], [0.5, 0.5]) or (0, 0, 0)
    assert (stat, df) == (pytest.approx(4.0), 1) and p == pytest.approx(0.0455003, abs=1e-7)
    # Shares need not sum to 1; three categories, two df.
    stat, df, p = chi_square_gof([10, 20, 70], [1, 2, 7]) or (0, 0, 0)
    assert (stat, df, p) == (0.0, 2, 1.0)
    # An arm expected empty: left out when empty, an impossible fit when not.
    assert chi_square_gof([50, 50, 0], [0.5, 0.5, 0.0]) == (0.0, 1, 1.0)
    assert chi_square_gof([50, 50, 1], [0.5, 0.5, 0.0]) == (math.inf, 2, 0.0)
    assert chi_square_gof([0, 0], [0.5, 0.5]) is None
    assert chi_square_gof([5, 0], [1.0, 0.0]) is None


def test_sign_test_exact() -> None:
    assert sign_test(0, 10) == 2 / 1024
    assert sign_test(15, 5) == pytest.approx(2 * 21700 / 2**20, rel=1e-15)  # 0.0414
    assert sign_test(10, 10) == 1.0
    assert sign_test(3, 0) == 0.25
    assert sign_test(0, 0) is None


def test_sign_test_normal_approximation_is_close_to_exact() -> None:
    wins_a, wins_b = 1050, 950  # n = 2000 > SIGN_TEST_EXACT_MAX: the normal curve
    assert wins_a + wins_b > SIGN_TEST_EXACT_MAX
    n = wins_a + wins_b
    exact = float(2 * Fraction(sum(math.comb(n, i) for i in range(wins_b + 1)), 2**n))
    assert sign_test(wins_a, wins_b) == pytest.approx(exact, rel=0.01)
    assert sign_test(wins_b, wins_a) == sign_test(wins_a, wins_b)


def test_kendall_tau_on_orders() -> None:
    assert kendall_tau("abcd", "abcd") == 1.0
    assert kendall_tau("abcd", "dcba") == -1.0
    assert kendall_tau("abc", "acb") == pytest.approx(1 / 3)
    # Only the ids both hold count: x and y are ignored.
    assert kendall_tau("axbc", "cbya") == -1.0
    assert kendall_tau("ab", "cd") is None
    assert kendall_tau("a", "a") is None
    assert kendall_tau(["a", "a", "b"], ["a", "b"]) == 1.0  # a repeated id counts once


def test_top_k_overlap() -> None:
    a = [str(i) for i in range(20)]
    assert top_k_overlap(a, a) == 1.0
    assert top_k_overlap(a, a[::-1]) == 0.0
    assert top_k_overlap(a, a[5:] + a[:5]) == 0.5
    assert top_k_overlap(a[:4], a[:5], k=10) == 1.0
    assert top_k_overlap([], a) is None


@pytest.mark.parametrize(
    ("p", "z"),
    [
        (0.975, 1.959963984540054),
        (0.995, 2.5758293035489004),
        (0.8, 0.8416212335729143),
        (0.5, 0.0),
        (0.025, -1.959963984540054),
        (1e-10, -6.361340902404056),
    ],
)
def test_normal_quantile_table_values(p: float, z: float) -> None:
    assert normal_quantile(p) == pytest.approx(z, abs=1e-12)


def test_normal_quantile_refuses_the_ends() -> None:
    for p in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError):
            normal_quantile(p)


def test_holm_adjust_matches_r() -> None:
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") -> 0.03 0.06 0.06 0.02
    got = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    # Untested arms (None) do not count; capped at 1; one test is left as it is.
    assert holm_adjust([None, 0.02, 0.9]) == [None, pytest.approx(0.04), 0.9]
    assert holm_adjust([0.6, 0.7]) == [1.0, 1.0]
    assert holm_adjust([0.3]) == [0.3] and holm_adjust([]) == []
