"""What the exposure log costs the re-rank, in one run: rankgate with the log off and on
(a Redis Stream, tokens signed), measured in turns, as a ratio of throughput.

    python bench/exposure_cost.py [--rounds 8] [--duration 3] [--base REV]

Two rankgates from the working tree (one worker each, the 100-item feed, 1,000 users),
one origin, one Valkey. Each round measures every target at concurrency 16, the order
reversed every other round, so the two sides of a ratio are measured back to back and a
slow patch of the machine falls on both. Prints each round's on/off ratio of requests/s,
their median and range, and the CPU per request the log adds (user + system, /proc).
``--base REV`` also serves a git revision (log off and on) beside them, for a change's
before and after in the same run. The issue's goal: on / off >= 0.95. Needs wrk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import common
import redis

EXPOSURES = "exposures: {enabled: true, sink: redis}\n"
GOAL = 0.95


Run = tuple[float, float, float]  # requests/s, CPU s per request: rankgate's, Redis's


def redis_cpu(client: redis.Redis | None) -> float:
    """CPU seconds (user + system) the Redis server has used, by its own count."""
    if client is None:
        return 0.0
    info: dict[str, float] = client.info("cpu")  # type: ignore[assignment]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def rps_in_turns(
    urls: dict[str, str],
    pids: dict[str, int],
    rounds: int,
    duration: int,
    lua: Path,
    redis_url: str | None = None,
) -> dict[str, list[Run]]:
    """Per target, each round's requests/s at c16 and CPU per request (the rankgate's and,
    with ``redis_url``, the Redis server's: where the log's writes land); targets in
    turns, the order reversed every other round."""
    client = redis.Redis.from_url(redis_url) if redis_url else None
    out: dict[str, list[Run]] = {n: [] for n in urls}
    for k in range(rounds):
        for name in list(urls) if k % 2 == 0 else list(reversed(urls)):
            before, server = common.tree_cpu(pids[name]), redis_cpu(client)
            run = common.wrk(urls[name], 16, duration, lua)
            n = max(run["requests"], 1)
            spent = (common.tree_cpu(pids[name]) - before) / n
            out[name].append((run["rps"], spent, (redis_cpu(client) - server) / n))
    if client is not None:
        client.close()
    return out


def cost(off: list[Run], on: list[Run]) -> dict[str, float]:
    """Each round's on/off ratio of requests/s: the median, the lowest and the highest;
    the median CPU per request each side, and of each round's difference (us)."""
    pairs = list(zip(off, on, strict=True))
    ratios = [b[0] / a[0] for a, b in pairs if a[0] > 0]
    return {
        "ratio": statistics.median(ratios) if ratios else 0.0,
        "low": min(ratios, default=0.0),
        "high": max(ratios, default=0.0),
        "rps_off": statistics.median(r[0] for r in off),
        "rps_on": statistics.median(r[0] for r in on),
        "cpu_off_us": statistics.median(r[1] for r in off) * 1e6,
        "cpu_on_us": statistics.median(r[1] for r in on) * 1e6,
        "cpu_added_us": statistics.median(b[1] - a[1] for a, b in pairs) * 1e6,
        "redis_added_us": statistics.median(b[2] - a[2] for a, b in pairs) * 1e6,
    }


def measure(
    off_url: str,
    on_url: str,
    pids: tuple[int, int],
    rounds: int,
    duration: int,
    lua: Path,
    redis_url: str | None = None,
) -> dict[str, float]:
    """The log's cost between two running rankgates (``bench/run.py`` calls this)."""
    urls = {"off": off_url, "on": on_url}
    pids_of = {"off": pids[0], "on": pids[1]}
    runs = rps_in_turns(urls, pids_of, rounds, duration, lua, redis_url)
    return cost(runs["off"], runs["on"])


def serve_pair(
    stack: ExitStack, tmp: Path, tree: Path, name: str, origin: str, redis_url: str
) -> dict[str, tuple[str, int]]:
    """Log off and on, rankgate from ``tree``: name -> (feed URL, pid)."""
    from compare import serve

    out = {}
    for side, extra in (("off", ""), ("on", EXPOSURES)):
        cfg, port = common.config_dir(
            tmp / f"{name}-{side}", origin=origin, redis_url=redis_url, workers=1, extra=extra
        )
        pid = serve(stack, tree, cfg)
        out[f"{name} {side}"] = (f"http://127.0.0.1:{port}/api/feed", pid)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--base", help="a git revision served beside the working tree")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/exposure_cost.py needs wrk", file=sys.stderr)
        return 2
    os.environ.setdefault("RANKGATE_TOKEN_KEY", "bench-key-" + "x" * 32)
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        trees = {"head": common.ROOT}
        if args.base:
            from compare import worktree

            trees = {"base": worktree(stack, args.base, tmp / "base"), **trees}
        redis_url = common.seeded_redis(stack, 1000)
        origin_port = common.free_port()
        origin = f"http://127.0.0.1:{origin_port}"
        common.spawn_origin(stack, origin_port, 100)
        served: dict[str, tuple[str, int]] = {}
        for name, tree in trees.items():
            served.update(serve_pair(stack, tmp, tree, name, origin, redis_url))
        for url, _ in [*served.values(), (f"{origin}/api/feed", 0)]:
            common.wait_port(int(url.split(":")[2].split("/")[0]))
        lua = tmp / "users.lua"
        lua.write_text(common.LUA)
        urls = {n: u for n, (u, _) in served.items()}
        common.warm(urls, lua)
        pids = {n: p for n, (_, p) in served.items()}
        runs = rps_in_turns(urls, pids, args.rounds, args.duration, lua, redis_url)
    report(args, trees, runs)
    return 0


def report(args: argparse.Namespace, trees: dict[str, Path], runs: dict[str, list[Run]]) -> None:
    print(f"{args.rounds} rounds of {args.duration}s at c16, in turns; 2 cores shared")
    for name in trees:
        off, on = runs[f"{name} off"], runs[f"{name} on"]
        per_round = " ".join(f"{b[0] / a[0]:.3f}" for a, b in zip(off, on, strict=True))
        c = cost(off, on)
        print(f"{name} ({args.base})" if name == "base" else f"{name} (working tree)")
        print(f"  rps off {c['rps_off']:7.0f}  on {c['rps_on']:7.0f}   (medians)")
        print(
            f"  cpu/req off {c['cpu_off_us']:5.0f}us  on {c['cpu_on_us']:5.0f}us  "
            f"the log {c['cpu_added_us']:+4.0f}us, and Redis's {c['redis_added_us']:+4.1f}us "
            "(medians of each round's difference)"
        )
        print(f"  on/off per round: {per_round}")
        ok = "met " if c["ratio"] >= GOAL else "MISS"
        print(
            f"  {ok} on/off {c['ratio']:.3f} (median; {c['low']:.3f}-{c['high']:.3f}) "
            f"goal >= {GOAL}"
        )


if __name__ == "__main__":
    sys.exit(main())
