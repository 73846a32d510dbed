"""The rows of the performance issue's table, each with its goal, from one run of
bench/run.py's results."""

from __future__ import annotations

from typing import Any

RR = "rankgate re-rank 100"
# bench/alternative.py: the origin calling the FastAPI ranking service, and that origin
# serving the same page without asking it (what the ranking adds is the difference).
ALT = "FastAPI re-rank 100"
ALT_BASE = "alt origin unranked"

Check = tuple[str, float | None, float, str]


def checks(
    results: dict[str, dict[str, float]],
    big: list[str],
    hol: tuple[float, float],
    added: Any,
    exposures: dict[str, float],
) -> list[Check]:
    """The rows of the performance issue's table: label, figure, goal, and its kind
    (``x``: at most, ``>``: at least); None where this bench does not measure it.
    ``exposures``: the log's cost measured in turns (bench/exposure_cost.py)."""
    hop, rr = results["plain hop"], results[RR]
    alt = results.get(ALT)
    return [
        (
            "re-rank 100 items: added p50 / the bare hop's",
            added(RR) / added("plain hop"),
            2.0,
            "x",
        ),
        ("re-rank rps / the bare hop's (c=16)", rr["rps"] / hop["rps"], 0.5, ">"),
        (
            "pass-through rps / the bare hop's",
            results["rankgate pass-through"]["rps"] / results["plain hop /static"]["rps"],
            0.95,
            ">",
        ),
        (
            "1,000 items: added p50 / 100 items'",
            added("rankgate re-rank 1000") / added(RR),
            1.5,
            "x",
        ),
        ("pass-through p99 beside 10,000-item re-ranks / alone", hol[1] / hol[0], 2.0, "x"),
        (
            "10,000 items: share applied",
            sum(b.startswith("applied") for b in big) / len(big),
            1.0,
            ">",
        ),
        ("exposure log on: re-rank rps / off (in turns)", exposures["ratio"], 0.95, ">"),
        (
            "vs FastAPI ranking service: added p50",
            added(RR) / added(ALT) if alt else None,
            0.6,
            "x",
        ),
        (
            "vs FastAPI ranking service: rps at c=16",
            rr["rps"] / alt["rps"] if alt else None,
            1.5,
            ">",
        ),
    ]
