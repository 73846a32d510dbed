"""Side-by-side benchmark, one run: the origin direct, a plain aiohttp pass-through, and
rankgate (pass-through and re-ranking a 100-item feed). Reports latency p50/p99 at
concurrency 1 and throughput at concurrency 16, with ratios to the baselines.

    python bench/run.py [--duration 8] [--items 100] [--model models/ranker_v1.onnx]

Needs wrk (apt-get install wrk). Starts its own Valkey (or uses REDIS_URL) and servers
on 127.0.0.1; everything stops at the end. Results also go to bench/results/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from common import (
    HERE,
    LUA,
    check_headers,
    default_model,
    free_port,
    save_results,
    seeded_redis,
    spawn,
    spawn_origin,
    wait_port,
    write_rankgate_config,
    wrk,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--model", help="ONNX file (default: models/ranker_v1.onnx)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    if args.model and not Path(args.model).is_file():
        print(f"no model file at {args.model}", file=sys.stderr)
        return 2

    py = sys.executable
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        redis_url = seeded_redis(stack, max(args.items, 1000))
        ports = {name: free_port() for name in ("origin", "plain", "rankgate", "admin")}
        origin = f"http://127.0.0.1:{ports['origin']}"
        spawn_origin(stack, ports["origin"], args.items)
        spawn(
            stack,
            py,
            str(HERE / "plain_proxy.py"),
            "--port",
            str(ports["plain"]),
            "--origin",
            origin,
        )
        cfg = write_rankgate_config(
            tmp,
            port=ports["rankgate"],
            admin_port=ports["admin"],
            origin=origin,
            redis_url=redis_url,
            model=Path(args.model) if args.model else default_model(tmp),
            workers=args.workers,
        )
        spawn(stack, py, "-m", "proxy", "serve", "--config", str(cfg))
        for port in ports.values():
            wait_port(port)
        lua = tmp / "users.lua"
        lua.write_text(LUA)

        targets = {
            "origin direct": f"{origin}/api/feed",
            "plain aiohttp pass-through": f"http://127.0.0.1:{ports['plain']}/api/feed",
            "rankgate pass-through": f"http://127.0.0.1:{ports['rankgate']}/static",
            "rankgate re-rank": f"http://127.0.0.1:{ports['rankgate']}/api/feed",
        }
        rerank = check_headers(targets["rankgate re-rank"])
        print(f"rankgate feed answer: X-Rerank: {rerank}")
        if not rerank.startswith("applied"):
            print("re-ranking is not applied; the figures would be meaningless", file=sys.stderr)
            return 1
        # Warm every path (connection pools, item cache) before measuring.
        for url in targets.values():
            wrk(url, 4, 1, lua)
        results: dict[str, dict[str, float]] = {}
        for name, url in targets.items():
            c1 = wrk(url, 1, args.duration, lua)
            c16 = wrk(url, 16, args.duration, lua)
            results[name] = {
                "p50_ms": c1["p50_ms"],
                "p99_ms": c1["p99_ms"],
                "rps_c1": c1["rps"],
                "rps_c16": c16["rps"],
                "p50_ms_c16": c16["p50_ms"],
                "p99_ms_c16": c16["p99_ms"],
                "errors": c1["errors"] + c16["errors"],
            }

    base = results["origin direct"]
    plain = results["plain aiohttp pass-through"]
    print(f"\n{args.items}-item feed, {args.duration}s per run, wrk, 2 cores shared by all")
    print(
        f"{'target':28} {'p50 c1':>9} {'p99 c1':>9} {'+p50 vs origin':>15} "
        f"{'rps c16':>9} {'rps/plain':>10} {'p99 c16':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:28} {r['p50_ms']:8.3f}ms {r['p99_ms']:8.3f}ms "
            f"{(r['p50_ms'] - base['p50_ms']) * 1000:13.0f}us {r['rps_c16']:9.0f} "
            f"{r['rps_c16'] / plain['rps_c16']:10.2f} {r['p99_ms_c16']:8.2f}ms"
        )
    save_results(
        "run",
        {
            "items": args.items,
            "duration": args.duration,
            "workers": args.workers,
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
