"""``rankgate experiments plan``: the units (and days) an A/B test and interleaving need.

    rankgate experiments plan --baseline-ctr 0.12 --mde 5% [--units-per-day 2000]
                              [--alpha 0.05] [--power 80%] [--share 50%]
                              [--design-effect 1]

The arithmetic is in proxy/readout/plan.py; the assumptions are printed with the figures.
"""

from __future__ import annotations

import argparse
import math
import re
import sys

from proxy.readout.plan import INTERLEAVING_RATIO, Plan, plan

__all__ = ["parse_share", "register"]


def parse_share(text: str) -> float:
    """'5%' -> 0.05, '0.05' -> 0.05 (a bare number above 1 is refused: say '5%')."""
    found = re.fullmatch(r"\s*([+-]?\d+(?:\.\d+)?)\s*(%?)\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(
            f"want a number or a percentage, e.g. 5% or 0.05: {text!r}"
        )
    value = float(found.group(1))
    if found.group(2):
        return value / 100
    if abs(value) >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} reads as more than 100%: write it as {text}%")
    return value


def _days(units: int, per_day: float | None) -> str:
    if not per_day:
        return ""
    return f", {math.ceil(units / per_day)} days at {per_day:g} units a day"


def render(p: Plan, args: argparse.Namespace) -> str:
    pct = f"{args.share * 100:g}%"
    head = (
        f"CTR {p.baseline * 100:.2f}% -> {p.target * 100:.2f}% ({args.mde * 100:+g}% relative), "
        f"alpha {args.alpha:g}, power {args.power * 100:g}%"
    )
    per = args.units_per_day
    lines = [
        head,
        f"A/B test ({pct} of units on the new arm):",
        f"  always-valid (read any time, the default): {p.sequential_units} units"
        f"{_days(p.sequential_units, per)}; set readout.expected_units: {p.sequential_units}",
        f"  fixed horizon (--fixed-horizon {p.fixed_units}, read once): {p.fixed_units} units"
        f"{_days(p.fixed_units, per)}",
        "interleaving (both rankers in every list, every unit compares them):",
        f"  always-valid: {p.interleaving_sequential} units{_days(p.interleaving_sequential, per)}",
        f"  fixed horizon: {p.interleaving_fixed} units{_days(p.interleaving_fixed, per)}",
        "assumptions:",
        f"  - each unit's clicks vary as a binomial's at the baseline CTR, times the design "
        f"effect {args.design_effect:g} (users with their own propensity and many exposures "
        "raise it: the per-unit variance of a past report over p(1-p) measures it)",
        f"  - interleaving: the A/B units over {args.ratio:g}, the ratio of the two sizes "
        "derived by bench/interleave_power.py --derive on generated traffic (two rankers "
        "that mostly agree); yours depends on how often your rankers disagree near the top",
        "  - days: new units a day reaching the route; an arm's units do not return as new",
    ]
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    try:
        result = plan(
            args.baseline_ctr, args.mde, args.alpha, args.power, args.share,
            args.design_effect, args.ratio,
        )  # fmt: skip
    except ValueError as exc:
        print(f"rankgate experiments plan: {exc}", file=sys.stderr)
        return 2
    print(render(result, args))
    return 0


def register(cmds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = cmds.add_parser("plan", help="units and days an A/B test and interleaving need")
    p.add_argument(
        "--baseline-ctr",
        type=parse_share,
        required=True,
        metavar="CTR",
        help="today's click-through rate, e.g. 0.12 or 12%%",
    )
    p.add_argument(
        "--mde",
        type=parse_share,
        required=True,
        metavar="LIFT",
        help="the smallest relative lift worth finding, e.g. 5%%",
    )
    p.add_argument(
        "--units-per-day",
        type=float,
        metavar="N",
        help="new units (users) a day on the route: prints days too",
    )
    p.add_argument("--alpha", type=parse_share, default=0.05)
    p.add_argument("--power", type=parse_share, default=0.8)
    p.add_argument(
        "--share",
        type=parse_share,
        default=0.5,
        help="the share of units on the new arm (default 50%%)",
    )
    p.add_argument(
        "--design-effect",
        type=float,
        default=1.0,
        metavar="D",
        help="the per-unit variance over the binomial's (default 1)",
    )
    p.add_argument("--ratio", type=float, default=INTERLEAVING_RATIO, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_plan)  # fmt: skip
