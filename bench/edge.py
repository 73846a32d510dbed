"""The edge Worker in workerd (miniflare) beside rankgate and the origin, one run: cold
start (session creation, first request of a fresh isolate) and warm per-request latency
for a 100- and a 1,000-item feed, and the bundle's size.

    python bench/edge.py [--duration 8] [--cold-runs 3]

Needs node with `npm ci` done in edge/, and wrk. Same machine, same origin
(bench/origin.py), same vectors (Valkey for rankgate, KV for the Worker), the committed
ranker_v1.onnx. workerd's clock inside the Worker ticks in whole milliseconds, so the
Worker's Server-Timing figures are means over many requests; latencies are measured by
wrk from outside. Results also go to bench/results/.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis
from common import (
    DIM,
    LUA,
    ROOT,
    USERS,
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

DEV = ROOT / "edge" / "dev.mjs"


def rankgate(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "proxy", *args], cwd=ROOT, check=True, capture_output=True
    )


def kv_files(redis_url: str, items: int, out: Path) -> Path:
    """The seeded vectors, read back from Redis, as a KV bulk file (rankgate edge kv's format)."""
    client = redis.Redis.from_url(redis_url)
    keys = [f"emb:user:u{k}" for k in range(USERS)] + [f"emb:item:i{k}" for k in range(items)]
    values = client.mget(keys)
    client.close()
    pairs = [
        {"key": k, "value": base64.b64encode(v).decode()}
        for k, v in zip(keys, values, strict=True)
        if isinstance(v, bytes) and len(v) == DIM * 4
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vectors.json").write_text(json.dumps(pairs))
    return out


class Worker:
    """node edge/dev.mjs, until its ready line; its stdout lines (JSON) kept."""

    def __init__(self, build: Path, kv: Path, origin: str, port: int, cold: bool) -> None:
        cmd = ["node", str(DEV), str(build), "--kv", str(kv), "--origin", origin]
        cmd += ["--port", str(port), *(["--cold"] if cold else [])]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if '"event":"ready"' in line:
                break
        else:
            raise RuntimeError("edge/dev.mjs stopped:\n" + "\n".join(self.lines))
        self.url = f"http://127.0.0.1:{port}"
        # Keep reading: the Worker logs a line per request, and a full pipe would stall it.
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            if line.startswith("{") and f'"event":"{name}"' in line:
                out.append(json.loads(line))
        return out


def timed_get(url: str, user: str = "u1") -> tuple[float, dict[str, float], str]:
    """(ms, Server-Timing durations, X-Rerank) of one feed request."""
    req = urllib.request.Request(url, headers={"X-User-Id": user})
    started = time.perf_counter()
    with urllib.request.urlopen(req) as resp:
        resp.read()
        elapsed = (time.perf_counter() - started) * 1000
        timing = resp.headers.get("Server-Timing", "")
        label = resp.headers.get("X-Rerank", "-")
    durs = {m.group(1): float(m.group(2)) for m in re.finditer(r"([\w-]+);dur=([\d.]+)", timing)}
    return elapsed, durs, label


def server_timing_means(url: str, n: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    for k in range(n):
        _, durs, _ = timed_get(url, f"u{k % USERS}")
        for name, value in durs.items():
            samples.setdefault(name, []).append(value)
    return {name: round(statistics.fmean(v), 3) for name, v in samples.items()}


def run_items(stack: ExitStack, tmp: Path, items: int, args: argparse.Namespace) -> dict[str, Any]:
    redis_url = seeded_redis(stack, max(items, 1000))
    ports = {name: free_port() for name in ("origin", "rankgate", "admin", "edge")}
    origin = f"http://127.0.0.1:{ports['origin']}"
    spawn_origin(stack, ports["origin"], items)
    cfg = write_rankgate_config(
        tmp,
        port=ports["rankgate"],
        admin_port=ports["admin"],
        origin=origin,
        redis_url=redis_url,
        model=default_model(tmp),
        budget_ms=1000,
    )
    spawn(
        stack,
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "--config",
        str(cfg),
        "--workers",
        "1",
        cwd=ROOT,
    )
    wait_port(ports["origin"])
    wait_port(ports["rankgate"])
    rankgate("edge", "build", "--config", str(cfg), "--out", str(tmp / "edge"))
    kv = kv_files(redis_url, items, tmp / "kv")
    feed = "/api/feed"
    result: dict[str, Any] = {"items": items}

    cold = []
    for _ in range(args.cold_runs):
        worker = Worker(tmp / "edge", kv, origin, ports["edge"], cold=True)
        try:
            first_ms, first, label = timed_get(worker.url + feed)
            second_ms, _, _ = timed_get(worker.url + feed, "u2")
            time.sleep(0.2)  # the session lines come from workerd's stdout
            cold.append(
                {
                    "first_request_ms": round(first_ms, 1),
                    "second_request_ms": round(second_ms, 1),
                    "session_ms": first.get("session"),
                    "first_label": label,
                }
            )
        finally:
            worker.stop()
    result["cold"] = cold

    worker = Worker(tmp / "edge", kv, origin, ports["edge"], cold=False)
    try:
        sessions = worker.events("session")
        result["warm_session_create_ms"] = [e["ms"] for e in sessions]
        lua = tmp / "users.lua"
        lua.write_text(LUA)
        labels = {
            "edge": check_headers(worker.url + feed),
            "rankgate": check_headers(f"http://127.0.0.1:{ports['rankgate']}{feed}"),
        }
        result["labels"] = labels
        for name, url in (
            ("origin", origin + feed),
            ("rankgate", f"http://127.0.0.1:{ports['rankgate']}{feed}"),
            ("edge", worker.url + feed),
        ):
            result[name] = wrk(url, 1, args.duration, lua)
        result["edge_server_timing_ms"] = server_timing_means(worker.url + feed, args.samples)
    finally:
        worker.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=300, help="requests for Server-Timing means")
    args = parser.parse_args()
    for tool in ("wrk", "node"):
        if not shutil.which(tool):
            print(f"bench/edge.py needs {tool}", file=sys.stderr)
            return 2
    results = []
    for items in (100, 1000):
        with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
            results.append(run_items(stack, Path(tmpdir), items, args))
            build = json.loads((Path(tmpdir) / "edge" / "build.json").read_text())
    sizes = build["sizes"]
    payload = {"runs": results, "sizes": sizes, "versions": build["versions"]}
    print(f"bundle: {sizes['raw'] / 1e6:.2f} MB, gzipped {sizes['gzip'] / 1e6:.2f} MB")
    for mod, size in sizes["modules"].items():
        print(f"  {mod}: {size['raw'] / 1e3:.0f} KB, gzipped {size['gzip'] / 1e3:.0f} KB")
    print(
        "| items | session create | cold 1st request | 2nd | p50 origin | p50 rankgate "
        "| p50 edge | edge infer (mean) |"
    )
    for r in results:
        cold = r["cold"]
        p = {k: r[k]["p50_ms"] for k in ("origin", "rankgate", "edge")}
        print(
            f"| {r['items']} | {sorted(c['session_ms'] for c in cold)} ms | "
            f"{sorted(c['first_request_ms'] for c in cold)} ms | "
            f"{sorted(c['second_request_ms'] for c in cold)} ms | {p['origin']:.3f} ms | "
            f"{p['rankgate']:.3f} ms | {p['edge']:.3f} ms | "
            f"{r['edge_server_timing_ms'].get('infer')} ms |"
        )
        print(f"    labels {r['labels']}; edge Server-Timing means {r['edge_server_timing_ms']}")
    print(f"results: {save_results('edge', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
