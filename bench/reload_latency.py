"""Latency of re-ranked requests in steady state versus while routes.yaml reloads with a
model swap, on one rankgate process.

    python bench/reload_latency.py [--rounds 4] [--seconds 3] [--concurrency 4]
                                   [--items 100] [--hidden 64]

Clients hammer a re-ranked 100-item feed. Each round has a steady block, then a
reloading block under the same load, in which routes.yaml is rewritten over and over
(temp file + rename, like an editor or a deploy), each time naming the other of two
model files: every reload parses, hashes, loads and warms a new ONNX session, swaps it
in and drops the old one. The file watcher picks each rewrite up; the next one is
written as soon as /admin/routes shows the new version. Steady and reloading blocks
alternate so that noise from the machine lands on both alike. Requests whose lifetime
overlapped a reload's build (from the reload's own timing in /admin/routes) are also
reported on their own.

``failed`` counts answers that are not 200 with a JSON body (there must be none);
``skipped`` counts 200s served in the origin's order (fail-open, e.g. a Redis timeout),
with their reasons.

Starts its own Valkey (or uses REDIS_URL), origin and rankgate on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from common import (
    HERE,
    USERS,
    free_port,
    mlp_model,
    routes_yaml,
    save_results,
    seeded_redis,
    spawn,
    spawn_origin,
    wait_port,
    write_rankgate_config,
)

BUDGET_MS = 50


@dataclass(frozen=True)
class Sample:
    start: float
    end: float
    status: int
    rerank: str  # X-Rerank, or the client error

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000

    @property
    def failed(self) -> bool:
        return self.status != 200

    @property
    def skipped(self) -> bool:
        return not self.failed and not self.rerank.startswith("applied")


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def summary(name: str, samples: list[Sample]) -> dict[str, Any]:
    ms = [s.ms for s in samples]
    reasons = Counter(s.rerank for s in samples if s.skipped)
    out: dict[str, Any] = {
        "requests": len(samples),
        "failed": sum(s.failed for s in samples),
        "skipped": sum(reasons.values()),
        "p50_ms": round(pct(ms, 50), 3),
        "p90_ms": round(pct(ms, 90), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "skip_reasons": dict(reasons),
    }
    print(
        f"{name:28} {out['requests']:6d} req  p50 {out['p50_ms']:6.2f}  "
        f"p90 {out['p90_ms']:6.2f}  p99 {out['p99_ms']:6.2f}  max {out['max_ms']:7.2f} ms  "
        f"failed {out['failed']}  skipped {out['skipped']}"
    )
    for s in samples:
        if s.failed:
            print(f"    failed after {s.ms:.1f} ms: {s.status} {s.rerank}")
    return out


async def load(url: str, concurrency: int, stop: asyncio.Event, into: list[Sample]) -> None:
    async def client(k: int) -> None:
        async with aiohttp.ClientSession() as s:
            n = 0
            while not stop.is_set():
                n += 1
                headers = {"X-User-Id": f"u{(k * 7919 + n) % USERS}"}
                t0 = time.perf_counter()
                try:
                    async with s.get(url, headers=headers) as resp:
                        body = await resp.read()
                        status = resp.status if body.startswith(b"{") else -resp.status
                        rerank = resp.headers.get("X-Rerank", "")
                except aiohttp.ClientError as exc:
                    status, rerank = 0, repr(exc)
                into.append(Sample(t0, time.perf_counter(), status, rerank))

    await asyncio.gather(*(client(k) for k in range(concurrency)))


class Reloader:
    """Rewrites routes.yaml between two models, one reload at a time, and keeps each
    reload's build span (in this process's perf_counter time)."""

    def __init__(self, routes: Path, models: list[Path], admin: str) -> None:
        self.routes, self.models, self.admin = routes, models, admin
        self.windows: list[tuple[float, float]] = []
        self.seconds: list[float] = []
        self.n = 0

    async def info(self, s: aiohttp.ClientSession) -> dict[str, Any]:
        async with s.get(f"{self.admin}/admin/routes") as resp:
            return dict(await resp.json())

    async def run_for(self, seconds: float) -> None:
        deadline = time.perf_counter() + seconds
        async with aiohttp.ClientSession() as s:
            version = int((await self.info(s))["version"])
            while time.perf_counter() < deadline:
                self.n += 1
                tmp = self.routes.with_name(".routes.yaml.tmp")
                tmp.write_text(routes_yaml(self.models[self.n % 2], BUDGET_MS))
                os.replace(tmp, self.routes)
                async with asyncio.timeout(10):
                    while True:
                        current = await self.info(s)
                        if current["version"] == version + 1:
                            break
                        await asyncio.sleep(0.02)  # admin shares the loop: poll gently
                version += 1
                last = current["last_attempt"]
                assert last["result"] == "ok", last
                end = time.perf_counter() - (time.time() - float(last["at"]))
                self.windows.append((end - float(last["seconds"]), end))
                self.seconds.append(float(last["seconds"]))


async def measure(args: argparse.Namespace, tmp: Path, port: int, admin: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/feed"
    models = [tmp / "v0.onnx", mlp_model(tmp / "v1.onnx", args.hidden, seed=1, scale=0.1)]
    reloader = Reloader(tmp / "routes.yaml", models, f"http://127.0.0.1:{admin}")

    async def block(samples: list[Sample], reloading: bool) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(load(url, args.concurrency, stop, samples))
        if reloading:
            await reloader.run_for(args.seconds)
        else:
            await asyncio.sleep(args.seconds)
        stop.set()
        await task

    await block([], False)  # warm-up: pools, item cache
    steady: list[Sample] = []
    during: list[Sample] = []
    for _ in range(args.rounds):
        await block(steady, False)
        await block(during, True)

    size_kb = models[1].stat().st_size / 1024
    print(
        f"\n{args.items}-item feed, concurrency {args.concurrency}, {args.rounds} rounds of "
        f"{args.seconds:g}s steady + {args.seconds:g}s reloading; model {size_kb:.0f} KB"
    )
    overlapping = [s for s in during if any(s.start < e and s.end > b for b, e in reloader.windows)]
    results = {
        "steady": summary("steady state", steady),
        "reloading": summary("while reloading", during),
        "overlapping": summary("overlapping a reload build", overlapping),
    }
    for sample in sorted(during, key=lambda x: -x.ms)[:3]:
        gap = min(
            (max(b - sample.end, sample.start - e, 0.0) for b, e in reloader.windows),
            default=float("nan"),
        )
        print(f"    slow: {sample.ms:.1f} ms, {gap * 1000:.1f} ms from the nearest reload build")
    print(
        f"{len(reloader.windows)} reloads with a model swap; build+swap p50 "
        f"{pct(reloader.seconds, 50) * 1000:.1f} ms, max {max(reloader.seconds) * 1000:.1f} ms; "
        f"reloads took {sum(reloader.seconds) / (args.rounds * args.seconds):.0%} of the "
        f"reloading time"
    )
    return {
        "items": args.items,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "model_kb": round(size_kb),
        "reloads": len(reloader.windows),
        "reload_ms_p50": round(pct(reloader.seconds, 50) * 1000, 2),
        "reload_ms_max": round(max(reloader.seconds) * 1000, 2),
        "results": results,
    }


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=64, help="model width (size of a load)")
    args = parser.parse_args()

    py = sys.executable
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        redis_url = seeded_redis(stack, args.items)
        ports = {name: free_port() for name in ("origin", "rankgate", "admin")}
        spawn_origin(stack, ports["origin"], args.items)
        cfg = write_rankgate_config(
            tmp,
            port=ports["rankgate"],
            admin_port=ports["admin"],
            origin=f"http://127.0.0.1:{ports['origin']}",
            redis_url=redis_url,
            model=mlp_model(tmp / "v0.onnx", args.hidden, seed=0, scale=0.1),
            workers=1,  # one process: the reload and the requests it measures
            budget_ms=BUDGET_MS,
        )
        spawn(stack, py, "-m", "proxy", "serve", "--config", str(cfg))
        for port in ports.values():
            wait_port(port)
        result = asyncio.run(measure(args, tmp, ports["rankgate"], ports["admin"]))

    out = save_results("reload", result)
    print(f"written to {out.relative_to(HERE.parent)}")
    return 1 if any(r["failed"] for r in result["results"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
