"""Does the readout keep its promise on realistic traffic? A/A logs read often must not
declare a difference; a real lift must be found.

    python bench/readout_validity.py [--logs 40] [--users 1500] [--lift 0.6] [--reads 8]
                                     [--beta 2,8] [--tail 1.5] [--cap 100]
                                     [--write-log DIR]

Each log (tests/support/heavy_users.py): --users users, each with their own click
propensity (Beta(--beta)), a Pareto(--tail) number of exposures capped at --cap (a few make
50 or more), half on arm beta, over a week. Every log is read --reads times (cut-offs
through the week, the last at its end) by the report's own code (proxy/readout/join.py,
compare.py), and judged three ways at each read:

  before         the exposure-level two-proportion z-test the report used until now
  unit, fixed    per-unit delta method, fixed-horizon interval (read early all the same)
  unit, always   per-unit delta method in a confidence sequence: the report's default

The A/A run has no difference; the lift run makes every beta user click 1 + --lift times
as often. Printed: logs declared different (for the lift: better) at any read and
at the last read. --write-log
writes the first lift log as JSONL (a picture of it: `experiments report --html`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from proxy.readout.logreader import Exposure
from tests.support.heavy_users import heavy_log, read_log, write_log

WAYS = ("before", "unit, fixed", "unit, always")


def tally(args: argparse.Namespace, lift: float) -> dict[str, tuple[int, int]]:
    counts = {way: [0, 0] for way in WAYS}
    for seed in range(args.logs):
        log = heavy_log(seed, args.users, lift, args.beta, args.tail, args.cap)
        reads = read_log(log, args.reads)
        ways = (reads.before, reads.fixed_unit, reads.always_valid)
        # A/A: any difference is false; a lift: only "better" is right.
        hit = (lambda d: d != 0) if lift == 0 else (lambda d: d > 0)
        for way, declared in zip(WAYS, ways, strict=True):
            counts[way][0] += any(hit(d) for d in declared)
            counts[way][1] += hit(declared[-1])
    return {way: (a, b) for way, (a, b) in counts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=40)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--lift", type=float, default=0.6)
    parser.add_argument("--reads", type=int, default=8)
    parser.add_argument("--beta", type=lambda s: tuple(map(float, s.split(","))), default=(2, 8))
    parser.add_argument("--tail", type=float, default=1.5)
    parser.add_argument("--cap", type=int, default=100)
    parser.add_argument("--write-log", type=Path, metavar="DIR")
    args = parser.parse_args()
    sample = heavy_log(0, args.users, 0.0, args.beta, args.tail, args.cap)
    per_user = Counter(r.unit for r in sample if isinstance(r, Exposure))
    print(
        f"{args.logs} logs of {args.users} users: propensity Beta{args.beta}, exposures "
        f"Pareto({args.tail:g}) capped at {args.cap} (log 0: {sum(per_user.values())} "
        f"exposures, {sum(1 for n in per_user.values() if n >= 50)} users with 50+), "
        f"read {args.reads} times"
    )
    started = time.perf_counter()
    rows = [("A/A", tally(args, 0.0)), (f"{args.lift * 100:+g}% lift", tally(args, args.lift))]
    print(f"{'declared different':<28}" + "".join(f"{w:>16}" for w in WAYS))
    for label, counts in rows:
        for i, when in enumerate(("at any read", "at the last read")):
            cells = "".join(f"{f'{c[i]} of {args.logs}':>16}" for c in counts.values())
            print(f"{label + ', ' + when:<28}" + cells)
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)  # stdout stays stable
    if args.write_log:
        log = heavy_log(0, args.users, args.lift, args.beta, args.tail, args.cap)
        print(f"wrote {write_log(args.write_log / 'exposures-bench-1-000001.jsonl', log)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
