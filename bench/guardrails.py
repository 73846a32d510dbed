"""What a guardrail costs per request, in one run: rankgate from the working tree served
twice side by side, the same route and 50/50 experiment, with and without guardrails,
measured in turns.

    python bench/guardrails.py [--rounds 6] [--duration 4]

  off   an experiment arm (same model), exposures and events on
  on    the same, with `guardrails: {not_applied: +5pp, added_p99_ms: +20, ctr: -10%}`:
        per request a few dictionary updates; every 0.5 s one Lua call and two HGETALLs

Reports medians of p50 at concurrency 1, requests/s at 16 and CPU per request (the
process tree), with the on/off ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
from contextlib import ExitStack
from pathlib import Path

import common

CONFIG = "exposures: {enabled: true, sink: redis}\nevents: {enabled: true}\n"
GUARDRAILS = "guardrails: {not_applied: +5pp, added_p99_ms: +20, ctr: -10%}\n"


def routes(model: Path, extra: str) -> str:
    return textwrap.dedent(f"""\
        models:
          ranker: {{path: {model}}}
          beta: {{path: {model}}}
        routes:
          - name: feed
            match: {{path: /api/feed}}
            model: ranker
            budget_ms: 25
            user: ["header:X-User-Id"]
            experiments:
              - {{name: beta, when: {{percent: 50, salt: b}}, model: beta}}
        """) + textwrap.indent(extra, "    ")


def hook_cost_us(n: int = 200_000) -> float:
    """The request path's share of a guardrail, in-process: moved() + pick() + observe()
    + exposed() per request, in microseconds (the flush runs apart, every 0.5 s)."""
    import time
    from types import SimpleNamespace

    sys.path.insert(0, str(common.ROOT))
    from proxy.config.routes import Route
    from proxy.experiments.guardrails import Guard
    from proxy.experiments.guardstore import MemoryGuardStore
    from proxy.outcome.errors import Outcome
    from proxy.outcome.record import RequestRecord
    from proxy.routing.arms import Arm

    route = Route.model_validate(
        {
            "name": "feed",
            "match": {"path": "/f"},
            "model": "m",
            "guardrails": {"not_applied": "+5pp", "added_p99_ms": 20, "ctr": "-10%"},
            "experiments": [{"name": "beta", "when": {"percent": 50}, "model": "m"}],
        }
    )
    guard = Guard(MemoryGuardStore(), lambda: [route])
    guard.guarded, guard.caps = frozenset({"feed"}), {"feed": 50}
    record = RequestRecord("GET", "/f", route="feed", arm="beta", outcome=Outcome.APPLIED)
    record.timings.update(total=0.002, origin=0.001)
    st = SimpleNamespace(
        route=SimpleNamespace(name="feed"),
        ctx=SimpleNamespace(arm="beta", user_id="u1"),
        ts_ms=1,
        request_id="r" * 24,
    )
    arm = Arm("beta", "m")
    started = time.perf_counter()
    for _ in range(n):
        guard.moved("feed", "beta")
        guard.pick("feed", arm, "u1")
        guard.observe(record)
        guard.exposed(st)  # type: ignore[arg-type]
        if len(guard.pending["feed"].exposures) > 10_000:
            guard.pending.clear()
    return (time.perf_counter() - started) / n * 1e6


def flush_cost_us(redis_url: str, n: int = 1000, rounds: int = 20) -> float:
    """The shared counts' side: one flush of ``n`` exposures (and n/10 clicks) by the
    Lua script, in microseconds of wall time per exposure (Redis is busy that long)."""
    import asyncio
    import time

    sys.path.insert(0, str(common.ROOT))
    from proxy.experiments.guardstore import Batch, RedisGuardStore

    async def run() -> float:
        store = RedisGuardStore(redis_url)
        spent = []
        try:
            for r in range(rounds):
                batch = Batch(
                    exposures=[(f"{r}-{k}", "beta:0", f"u{k % 700}", 50) for k in range(n)],
                    clicks=[f"{r}-{k}" for k in range(0, n, 10)],
                )
                batch.add("beta:0", "requests", n)
                started = time.perf_counter()
                await store.add("bench", batch, 600)
                spent.append(time.perf_counter() - started)
        finally:
            await store.close()
        return statistics.median(spent) / n * 1e6

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=int, default=4)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/guardrails.py needs wrk", file=sys.stderr)
        return 2
    os.environ.setdefault("RANKGATE_TOKEN_KEY", "bench-key-" + "x" * 32)
    model = common.ROOT / "models" / "ranker_v1.onnx"
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        redis_url = common.seeded_redis(stack, 1000)
        flush_us = flush_cost_us(redis_url)
        origin_port = common.free_port()
        origin = f"http://127.0.0.1:{origin_port}"
        common.spawn_origin(stack, origin_port, 100)
        urls: dict[str, str] = {}
        pids: dict[str, int] = {}
        for name, extra in {"off": "", "on": GUARDRAILS}.items():
            cfg, port = common.config_dir(
                tmp / name,
                model,
                origin=origin,
                redis_url=redis_url,
                workers=1,
                routes=routes(model, extra),
                extra=CONFIG,
            )
            proc = common.spawn(stack, sys.executable, "-m", "proxy", "serve", "--config", str(cfg))
            pids[name], urls[name] = proc.pid, f"http://127.0.0.1:{port}/api/feed"
        for url in [*urls.values(), f"{origin}/api/feed"]:
            common.wait_port(int(url.split(":")[2].split("/")[0]))
        lua = tmp / "users.lua"
        lua.write_text(common.LUA)
        common.warm(urls, lua)
        med = common.measure_in_turns(urls, pids, args.rounds, args.duration, lua)
    print(f"medians of {args.rounds} rounds")
    print(f"{'guardrails':10} {'p50 c1':>9} {'rps c16':>9} {'cpu/req':>9}")
    for name, (lat, thr, us) in med.items():
        print(f"{name:10} {lat:7.0f}us {thr:9.0f} {us * 1e6:7.0f}us")
    on, off = med["on"], med["off"]
    print(f"the hooks on the request path, in-process: {hook_cost_us():.2f} us per request")
    print(f"the flush (Lua, 1,000 exposures + 100 clicks): {flush_us:.2f} us per exposure")
    print(
        f"on/off: p50 {on[0] / off[0]:.3f}, throughput {on[1] / off[1]:.3f}, "
        f"cpu per request {on[2] / off[2]:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
