"""How many exposures interleaving and an A/B test need to name the better model.

    python bench/interleave_power.py [--logs 20] [--sizes 400,800,1600,3200,6400]

The same rankers, users and click model for both (tests/support/exposure_logs.py: a weaker and a
better ranker of one catalogue); per size, the share of seeded logs in which team-draft
interleaving names the better model (sign test, p < 0.05) and in which the A/B test of
CTR does (z-test against the default, p < 0.05, positive lift). Pure Python, no servers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.exposure_logs import ab_traffic, interleaved_traffic, readout, route_of


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=20)
    parser.add_argument("--sizes", default="400,800,1600,3200,6400")
    args = parser.parse_args()
    print(f"{'exposures':>9}  {'interleaving':>12}  {'A/B test':>8}   (logs naming it)")
    for n in (int(x) for x in args.sizes.split(",")):
        il = ab = 0
        for seed in range(args.logs):
            (pref,) = route_of(readout(interleaved_traffic(n, seed))).interleaving
            il += pref.winner == "ranker_v2"
            beta = route_of(readout(ab_traffic(n, seed))).arms[1]
            ab += beta.p_value is not None and beta.p_value < 0.05 and (beta.lift or 0) > 0
        print(f"{n:9}  {il:>9}/{args.logs}  {ab:>5}/{args.logs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
