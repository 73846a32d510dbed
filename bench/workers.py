"""Throughput of ``rankgate serve --workers N`` for several N, in one run: a pass-through
request and a re-ranked 100-item feed, with wrk at a fixed concurrency.

    python bench/workers.py [--workers 1,2] [--duration 8] [--conns 32] [--rounds 3] [--gc]

``--gc`` also runs one worker with the GC tuning off (RANKGATE_GC_TUNING=0), to see
what gc.freeze() and the larger gen-0 threshold do to the tail. The origin, Valkey and
wrk share the machine with the workers, so read the figures as ratios. Needs wrk.
Results also go to bench/results/workers-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import common


def wait_ready(admin_port: int, workers: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz") as resp:
                body = json.loads(resp.read())
                if body.get("workers_ready", 1) >= workers:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("rankgate did not become ready")


def run_one(
    tmp: Path, origin: str, redis_url: str, model: Path, workers: int, args: Any, gc: bool
) -> dict[str, dict[str, float]]:
    port, admin = common.free_port(), common.free_port()
    cfg = common.write_rankgate_config(
        tmp,
        port=port,
        admin_port=admin,
        origin=origin,
        redis_url=redis_url,
        model=model,
        access_log=args.access_log,
    )
    env = {**os.environ, "RANKGATE_GC_TUNING": "1" if gc else "0"}
    cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(cfg), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_ready(admin, workers)
        lua = tmp / "users.lua"
        lua.write_text(common.LUA)
        targets = {
            "pass-through": f"http://127.0.0.1:{port}/static",
            "re-rank": f"http://127.0.0.1:{port}/api/feed",
        }
        if not common.check_headers(targets["re-rank"]).startswith("applied"):
            raise RuntimeError("re-ranking is not applied; the figures would be meaningless")
        results = {}
        for name, url in targets.items():
            common.wrk(url, args.conns, 1, lua)  # warm pools and caches
            results[name] = common.wrk(url, args.conns, args.duration, lua)
        return results
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def median_run(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per path, the round with the median throughput (its latencies come with it)."""
    out = {}
    for path in runs[0]:
        ordered = sorted((r[path] for r in runs), key=lambda r: r["rps"])
        out[path] = {**ordered[len(ordered) // 2], "rps_all": [r["rps"] for r in ordered]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (median)")
    parser.add_argument("--gc", action="store_true", help="also run 1 worker without GC tuning")
    parser.add_argument("--access-log", action="store_true", help="with the access log on")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    counts = [int(n) for n in args.workers.split(",")]
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        redis_url = common.seeded_redis(stack, max(args.items, 1000))
        model = common.default_model(tmp)
        origin_port = common.free_port()
        common.spawn_origin(stack, origin_port, args.items)
        common.wait_port(origin_port)
        origin = f"http://127.0.0.1:{origin_port}"

        runs = [(f"{n} worker{'s' if n > 1 else ''}", n, True) for n in counts]
        if args.gc:
            runs.append(("1 worker, GC tuning off", 1, False))
        # Rounds alternate the configurations, and the median of each is reported: a
        # load that comes and goes on a shared machine then hurts all of them alike.
        rounds: dict[str, list[dict[str, dict[str, float]]]] = {label: [] for label, _, _ in runs}
        for _ in range(args.rounds):
            for label, n, gc in runs:
                rounds[label].append(run_one(tmp, origin, redis_url, model, n, args, gc))
        results = {label: median_run(got) for label, got in rounds.items()}

    first = results[runs[0][0]]
    print(
        f"\n{args.items}-item feed, wrk -c{args.conns} -d{args.duration}s, "
        f"{os.cpu_count()} CPUs shared with the origin, Valkey and wrk"
    )
    # Median, and best of the rounds: background load only ever takes throughput away,
    # so the best round is the least disturbed one.
    print(
        f"{'run':26} {'path':13} {'median':>7} {'ratio':>6} {'best':>7} {'ratio':>6} "
        f"{'p50':>9} {'p99':>9}  rps per round"
    )
    for label, by_path in results.items():
        for path, r in by_path.items():
            ratio = r["rps"] / first[path]["rps"]
            best = max(r["rps_all"])
            best_ratio = best / max(first[path]["rps_all"])
            print(
                f"{label:26} {path:13} {r['rps']:7.0f} {ratio:6.2f} {best:7.0f} {best_ratio:6.2f} "
                f"{r['p50_ms']:7.2f}ms {r['p99_ms']:7.2f}ms  "
                + " ".join(f"{v:.0f}" for v in r["rps_all"])
            )
    common.save_results(
        "workers",
        {"conns": args.conns, "duration": args.duration, "rounds": args.rounds, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
