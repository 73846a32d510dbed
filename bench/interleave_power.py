"""How many exposures interleaving and an A/B test need to name the better model.

    python bench/interleave_power.py [--logs 20] [--sizes 400,800,1600,3200,6400]
                                     [--sequential] [--derive 60000]

The same rankers, users and click model for both (tests/support/exposure_logs.py: a weaker and a
better ranker of one catalogue); per size, the share of seeded logs in which team-draft
interleaving names the better model and in which the A/B test of CTR does (the report's
verdict: "better" for ranker_v2), each exposure its own unit. Both are read once, as tests
planned for that size (--fixed-horizon), unless --sequential (the report's default,
always-valid: larger sizes). Pure Python, no servers.

--derive N instead computes the 80%-power sizes from one log of N exposures of each kind
(the A/B CTRs into the two-proportion size; the mean and variance of the units' interleaving
votes into the z-test's size): their ratio is the one `rankgate experiments plan` uses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.readout.plan import plan
from proxy.readout.stats import normal_quantile
from proxy.readout.verdict import Tuning
from tests.support.exposure_logs import ab_traffic, interleaved_traffic, readout, route_of


def derive(n: int) -> int:
    default, beta = route_of(readout(ab_traffic(n, 99))).arms
    ab = plan(default.ctr, beta.ctr / default.ctr - 1).fixed_units
    (il,) = route_of(readout(interleaved_traffic(n, 99))).interleaving
    mean = il.preference or 0.0
    var = (il.units_a + il.units_b) / il.units - mean * mean
    z = normal_quantile(0.975) + normal_quantile(0.8)
    clicked = il.units / il.exposures  # only units with a click vote
    units = z * z * var / (mean * mean) / clicked
    print(f"A/B: CTR {default.ctr:.4f} -> {beta.ctr:.4f}: {ab} units for 80% power")
    print(
        f"interleaving: mean vote {mean:+.4f}, variance {var:.4f}, {clicked:.1%} of units "
        f"vote: {units:.0f} units for 80% power"
    )
    print(f"ratio: {ab / units:.1f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=20)
    parser.add_argument("--sizes", default="400,800,1600,3200,6400")
    parser.add_argument("--sequential", action="store_true")
    parser.add_argument("--derive", type=int, metavar="N")
    args = parser.parse_args()
    if args.derive:
        return derive(args.derive)
    print(f"{'exposures':>9}  {'interleaving':>12}  {'A/B test':>8}   (logs naming it)")
    for n in (int(x) for x in args.sizes.split(",")):
        il = ab = 0
        tuning = Tuning() if args.sequential else Tuning(planned_units=n)
        for seed in range(args.logs):
            (pref,) = route_of(readout(interleaved_traffic(n, seed), tuning=tuning)).interleaving
            il += pref.winner == "ranker_v2"
            beta = route_of(readout(ab_traffic(n, seed), tuning=tuning)).arms[1]
            ab += beta.decision == "better"
        print(f"{n:9}  {il:>9}/{args.logs}  {ab:>5}/{args.logs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
