"""rankgate against the ranking service a team would build instead, measured in turns.

    python bench/versus.py [--rounds 3] [--duration 5]

The two "vs FastAPI" rows of bench/run.py, steadier: the origin direct, rankgate
re-ranking its 100-item feed (one worker, access log on), bench/alternative.py's origin
serving the same page unranked and ranked through the FastAPI service, on the same model,
feed and Valkey, measured in turns (``common.measure_in_turns``: p50 at concurrency 1,
requests/s and CPU per request at 16, medians over the rounds, the order reversed every
other round). Needs wrk and the bench extra (fastapi, uvicorn).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import common
import run
from goals import ALT, ALT_BASE, RR


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--budget-ms", type=float, default=50.0)
    parser.add_argument("--model", help="ONNX file (default: models/ranker_v1.onnx)")
    args = parser.parse_args()
    args.workers = 1
    if not shutil.which("wrk"):
        print("bench needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        urls = {"redis": common.seeded_redis(stack, run.ITEMS)}
        origin_port = common.free_port()
        urls["origin"] = f"http://127.0.0.1:{origin_port}"
        origin = common.spawn_origin(stack, origin_port, 100)
        common.wait_port(origin_port)
        proc, rankgate, _, _ = run.serve(stack, tmp, args, urls)
        alt, (service_pid, alt_pid) = run.alternative(stack, tmp, args, urls["redis"])
        targets = {
            "origin direct": f"{urls['origin']}/api/feed",
            RR: f"{rankgate}/api/feed",
            ALT_BASE: f"{alt}/api/feed/unranked",
            ALT: f"{alt}/api/feed",
        }
        pids: dict[str, int | tuple[int, ...]] = {"origin direct": origin.pid, RR: proc.pid}
        pids.update({ALT_BASE: alt_pid, ALT: (service_pid, alt_pid)})
        lua = tmp / "users.lua"
        lua.write_text(common.LUA)
        common.warm(targets, lua)
        print(f"{ALT} and rankgate: {run.same_order(targets[RR], targets[ALT])}", file=sys.stderr)
        got = common.measure_in_turns(targets, pids, args.rounds, args.duration, lua)
    report(args, got)
    return 0


def report(args: argparse.Namespace, got: dict[str, tuple[float, float, float]]) -> None:
    print(f"\nin turns, {args.rounds} rounds of {args.duration}s, wrk, 2 shared cores (medians)")
    print(f"{'target':24} {'p50 c1':>9} {'rps c16':>9} {'cpu/req':>8}")
    for name, (p50, rps, cpu) in got.items():
        print(f"{name:24} {p50:7.0f}us {rps:9.0f} {cpu * 1e6:6.0f}us")
    print(f"cpu/req: of the serving process; for {ALT}, of the service and its origin")
    rankgate = got[RR][0] - got["origin direct"][0]
    service = got[ALT][0] - got[ALT_BASE][0]
    print(f"\nadded p50: rankgate {rankgate:.0f}us (over the origin direct), FastAPI ranking")
    print(f"  {service:.0f}us (over its origin serving the page unranked)")
    print(f"  vs FastAPI ranking service: added p50      {rankgate / service:6.2f}  (goal <= 0.6)")
    ratio = got[RR][1] / got[ALT][1]
    print(f"  vs FastAPI ranking service: rps at c=16    {ratio:6.2f}  (goal >= 1.5)")
    common.save_results("versus", {"rounds": args.rounds, "duration": args.duration, "got": got})


if __name__ == "__main__":
    sys.exit(main())
