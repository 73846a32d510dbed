"""A small, seeded bench/readout_validity.py: on heavy-tailed users read 8 times, the
default readout declares no difference between identical arms and finds a strong lift,
where the exposure-level test it replaced cries wolf."""

from __future__ import annotations

from tests.support.heavy_users import heavy_log, read_log


def test_identical_arms_are_never_declared_different() -> None:
    before = 0
    for seed in range(10):
        reads = read_log(heavy_log(seed, users=1000))
        assert not any(reads.always_valid), seed
        before += any(reads.before)
    # The exposure-level test, read 8 times, "found" a difference in several of them.
    assert before >= 2, before


def test_a_strong_lift_is_found() -> None:
    for seed in range(3):
        reads = read_log(heavy_log(100 + seed, users=1000, lift=1.0))
        assert reads.always_valid[-1] == 1, seed  # better, at the end
        assert -1 not in reads.always_valid
        assert reads.final_lift is not None and 0.5 < reads.final_lift < 1.6
