"""What hostile clients do to rankgate, measured; with --base, against a base revision in
the same run (served from a temporary worktree, as bench/compare.py does).

    python bench/abuse.py slow-readers [--base REV] [--clients 800] [--workers 2]
    python bench/abuse.py aborts [--base REV] [--clients 300] [--workers 2]
    python bench/abuse.py cache [--base REV] [--feeds 2000] [--items 1000] [--workers 2]
    python bench/abuse.py upload [--base REV] [--mb 3] [--rounds 7]

slow-readers  N clients ask for a large download and never read it; meanwhile one
              normal client (one keep-alive connection, 2 s timeout, each latency
              measured) sends pass-through and feed requests; RSS per worker before and
              while they hang on.
aborts        N clients read the start of a large download and hang up; the lines each
              rankgate logged meanwhile, by level.
cache         N feeds of ITEMS items whose ids change every time, with
              ``item_cache: {max_items: ITEMS}``; RSS per worker before and after.
upload        ``curl --data-binary @FILE -H 'Expect: 100-continue'`` of MB megabytes through
              each rankgate and to the origin direct; the median time of ROUNDS.

Everything shares one machine (2 vCPUs here, with the load generators, the origin and
Valkey): compare rows of one run. Needs curl (upload).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import common
import compare

CHUNK = 64 * 1024
POOL = 20_000  # item ids with vectors in Valkey (cache bench)


# -- the origin (``python bench/abuse.py origin --port P``) -------------------------------


def run_origin(port: int) -> None:
    import orjson
    from aiohttp import web

    static = b"x" * 2048
    chunk = b"d" * CHUNK

    async def static_handler(request: web.Request) -> web.Response:
        return web.Response(body=static, content_type="text/plain")

    async def big(request: web.Request) -> web.StreamResponse:
        # Streamed with back-pressure: the origin never holds a whole body per client.
        mb = int(request.query.get("mb", "64"))
        resp = web.StreamResponse()
        resp.content_length = mb * 1024 * 1024
        await resp.prepare(request)
        try:
            for _ in range(mb * 1024 * 1024 // CHUNK):
                await resp.write(chunk)
        except ConnectionError:
            pass
        return resp

    async def pages(request: web.Request) -> web.Response:
        # A different id list every time (n), all ids among POOL; 1000 items ~ 60 KB.
        n = int(request.query.get("n", "0"))
        size = int(request.query.get("items", "1000"))
        ids = [(n * 7919 + k * 13) % POOL for k in range(size)]
        body = orjson.dumps({"items": [{"id": f"i{i}", "rank": k} for k, i in enumerate(ids)]})
        return web.Response(body=body, content_type="application/json")

    async def upload(request: web.Request) -> web.Response:
        size = 0
        async for data in request.content.iter_any():
            size += len(data)
        return web.Response(text=str(size))

    from origin import feed_body  # bench/origin.py: the 100-item reference feed

    body = feed_body(100)

    async def feed_handler(request: web.Request) -> web.Response:
        if "n" in request.query:
            return await pages(request)
        return web.Response(body=body, content_type="application/json")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/static", static_handler)
    app.router.add_get("/big", big)
    app.router.add_get("/api/feed", feed_handler)
    app.router.add_post("/upload", upload)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


# -- processes and their memory ---------------------------------------------------------


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def worker_pids(pid: int) -> list[int]:
    """The serving processes behind ``rankgate serve`` (itself with --workers 1)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"proxy.workers" in cmd:
            found.append(int(entry))
    return sorted(found) or [pid]


def rss_line(pid: int) -> str:
    return ", ".join(f"{rss_mb(p):.0f}" for p in worker_pids(pid)) + " MB"


class Target:
    def __init__(self, name: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.port, self.proc, self.log = name, port, proc, log

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def start_targets(
    stack: ExitStack, args: argparse.Namespace, tmp: Path, origin: str, redis_url: str, extra: str
) -> list[Target]:
    trees = {}
    if args.base:
        trees["base"] = compare.worktree(stack, args.base, tmp / "base")
    trees["head"] = common.ROOT
    targets = []
    for name, tree in trees.items():
        cfg, port = common.config_dir(
            tmp / f"conf-{name}",
            origin=origin,
            redis_url=redis_url,
            workers=args.workers,
            budget_ms=1000,
        )
        if extra:
            cfg.write_text(cfg.read_text().replace("embeddings: {dim: 32}", extra))
        env = {**os.environ, "PYTHONPATH": str(tree)}
        # Its application log (stderr) is kept: the aborts scenario reads it.
        log = stack.enter_context(open(tmp / f"{name}.stderr", "wb"))  # noqa: SIM115
        cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(cfg)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=tree)
        stack.callback(proc.wait, 10)
        stack.callback(proc.terminate)
        targets.append(Target(name, port, proc, tmp / f"{name}.stderr"))
    for t in targets:
        common.wait_port(t.port)
    time.sleep(1.0 + args.workers)  # workers up and warm
    return targets


# -- slow readers -------------------------------------------------------------------------


async def hold_non_readers(port: int, n: int, stop: asyncio.Event) -> int:
    """N connections that ask for /big and never read; returns how many connected."""
    socks: list[socket.socket] = []
    loop = asyncio.get_running_loop()
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", port)), 5)
            await loop.sock_sendall(s, b"GET /big?mb=64 HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        except (OSError, TimeoutError):
            s.close()
    await stop.wait()
    for s in socks:
        s.close()
    return len(socks)


def normal_client(url: str, seconds: float) -> str:
    """One client, one keep-alive connection, requests back to back for ``seconds``: each
    latency measured (closed loop, 2 s timeout), as a user would see it."""

    async def run() -> tuple[list[float], int]:
        import aiohttp

        latencies: list[float] = []
        timeouts = 0
        timeout = aiohttp.ClientTimeout(total=2)
        connector = aiohttp.TCPConnector(limit=1)
        headers = {"X-User-Id": "u1"}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                started = time.perf_counter()
                try:
                    async with session.get(url, headers=headers) as resp:
                        await resp.read()
                    latencies.append(time.perf_counter() - started)
                except (TimeoutError, aiohttp.ClientError):
                    timeouts += 1
        return latencies, timeouts

    latencies, timeouts = asyncio.run(run())
    if not latencies:
        return f"{'no answer':>9} {'':>9} {'':>9} {0:>8} {timeouts:>8}"
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    ms = [v * 1000 for v in (q[49], q[98], max(latencies))]
    return f"{ms[0]:7.2f}ms {ms[1]:7.2f}ms {ms[2]:7.1f}ms {len(latencies):>8} {timeouts:>8}"


def slow_readers(args: argparse.Namespace, targets: list[Target]) -> None:
    print(
        f"{args.clients} clients ask for a 64 MB download and never read; meanwhile one "
        f"normal client, requests back to back for {args.duration} s"
    )
    head = (
        f"{'target':6} {'phase':18} {'path':10} {'p50':>9} {'p99':>9} {'max':>9} "
        f"{'answered':>8} timeouts"
    )
    print(head)
    for t in targets:
        for path in ("/static", "/api/feed"):
            line = normal_client(t.url(path), args.duration)
            print(f"{t.name:6} {'alone':18} {path:10} {line}")
        print(f"{t.name:6} RSS per worker alone: {rss_line(t.proc.pid)}")

        async def run(t: Target = t) -> None:
            stop = asyncio.Event()
            holder = asyncio.create_task(hold_non_readers(t.port, args.clients, stop))
            await asyncio.sleep(args.settle)
            print(f"{t.name:6} RSS per worker with them: {rss_line(t.proc.pid)}")
            for path in ("/static", "/api/feed"):
                line = await asyncio.to_thread(normal_client, t.url(path), args.duration)
                print(f"{t.name:6} {f'{args.clients} non-readers':18} {path:10} {line}")
            print(f"{t.name:6} RSS per worker after: {rss_line(t.proc.pid)}")
            stop.set()
            print(f"{t.name:6} ({await holder} non-readers were connected)")

        asyncio.run(run())
        time.sleep(3)  # let the target shed them before the next one is measured


# -- aborted downloads --------------------------------------------------------------------


async def abort_downloads(port: int, n: int) -> int:
    """N clients that read the first 100 KB of a 64 MB download and hang up."""
    done = 0
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /big?mb=64 HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readexactly(100_000)
            done += 1
        writer.close()
    return done


def log_levels(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r'\{"time":"[^"]*","level":"(\w+)"', line)
        level = m.group(1) if m else ("traceback" if line.startswith("Traceback") else None)
        if level:
            counts[level] = counts.get(level, 0) + 1
    return counts


def aborts(args: argparse.Namespace, targets: list[Target]) -> None:
    print(f"{args.clients} clients read 100 KB of a 64 MB download and hang up")
    for t in targets:
        before = log_levels(t.log)
        done = asyncio.run(abort_downloads(t.port, args.clients))
        time.sleep(1.0)
        after = log_levels(t.log)
        grown = {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
        mid = sum("mid-body" in line for line in t.log.read_text(errors="replace").splitlines())
        print(
            f"{t.name:6} {done} aborted; application log lines by level: {grown or 'none'}; "
            f"'origin failed mid-body': {mid}"
        )


# -- changing feeds and the item cache ----------------------------------------------------


async def changing_feeds(target: Target, feeds: int, items: int, first: int) -> int:
    import aiohttp

    applied = 0
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(4)

        async def one(n: int) -> None:
            nonlocal applied
            async with (
                sem,
                session.get(
                    target.url(f"/api/feed?n={n}&items={items}"), headers={"X-User-Id": "u1"}
                ) as resp,
            ):
                await resp.read()
                applied += resp.headers.get("X-Rerank", "").startswith("applied")

        await asyncio.gather(*(one(n) for n in range(first, first + feeds)))
    return applied


def cache(args: argparse.Namespace, targets: list[Target]) -> None:
    print(
        f"{args.feeds} feeds of {args.items} items with changing ids, item_cache: "
        f"{{max_items: {args.items}}} (4 concurrent)"
    )
    for t in targets:
        warm = asyncio.run(changing_feeds(t, 50, args.items, 0))
        before = rss_line(t.proc.pid)
        started = time.perf_counter()
        applied = asyncio.run(changing_feeds(t, args.feeds, args.items, 50))
        took = time.perf_counter() - started
        print(
            f"{t.name:6} RSS per worker after 50 warm-up feeds: {before}; after {args.feeds} "
            f"more: {rss_line(t.proc.pid)} ({applied + warm} applied, {took:.1f} s)"
        )


# -- uploads with Expect: 100-continue ----------------------------------------------------


def curl_upload(url: str, data: Path) -> float:
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total} %{http_code}",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            f"@{data}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[1] == "200", out
    return float(out[0])


def upload(args: argparse.Namespace, targets: list[Target], origin: str, tmp: Path) -> None:
    data = tmp / "upload.bin"
    data.write_bytes(os.urandom(args.mb * 1024 * 1024))
    print(f"curl --data-binary @{args.mb}MB.bin -H 'Expect: 100-continue': median of {args.rounds}")
    urls = {"direct": f"{origin}/upload", **{t.name: t.url("/upload") for t in targets}}
    times: dict[str, list[float]] = {name: [] for name in urls}
    for k in range(args.rounds):
        for name in urls if k % 2 == 0 else reversed(list(urls)):
            times[name].append(curl_upload(urls[name], data))
    for name, values in times.items():
        print(
            f"{name:6} {statistics.median(values) * 1000:8.1f} ms"
            f"  (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})"
        )
    # The other way, for the chunk size: a 64 MB download through each, and direct.
    print(f"curl -o /dev/null of a 64 MB download: median of {args.rounds}")
    urls = {"direct": f"{origin}/big?mb=64", **{t.name: t.url("/big?mb=64") for t in targets}}
    times = {name: [] for name in urls}
    for k in range(args.rounds):
        for name in urls if k % 2 == 0 else reversed(list(urls)):
            out = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", urls[name]],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            times[name].append(float(out))
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:6} {median * 1000:8.1f} ms  ({64 / median:.0f} MB/s)")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "origin":
        run_origin(int(sys.argv[sys.argv.index("--port") + 1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["slow-readers", "aborts", "cache", "upload"])
    parser.add_argument("--base", help="a git revision to measure beside the working tree")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=800)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--feeds", type=int, default=2000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--mb", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    need = {"upload": "curl"}.get(args.scenario)
    if need and not shutil.which(need):
        print(f"bench/abuse.py {args.scenario} needs {need}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        redis_url = common.seeded_redis(stack, POOL if args.scenario == "cache" else 100)
        origin_port = common.free_port()
        origin = f"http://127.0.0.1:{origin_port}"
        common.spawn(stack, sys.executable, __file__, "origin", "--port", str(origin_port))
        common.wait_port(origin_port)
        extra = ""
        if args.scenario == "cache":
            extra = f"embeddings: {{dim: 32, item_cache: {{max_items: {args.items}}}}}"
        targets = start_targets(stack, args, tmp, origin, redis_url, extra)
        for t in targets:
            if not common.check_headers(t.url("/api/feed")).startswith("applied"):
                print(f"{t.name}: re-ranking is not applied", file=sys.stderr)
                return 1
        print(
            f"base {args.base or '-'}, head working tree, {args.workers} worker(s) each, "
            f"{os.cpu_count()} CPUs shared with everything here"
        )
        if args.scenario == "slow-readers":
            slow_readers(args, targets)
        elif args.scenario == "aborts":
            aborts(args, targets)
        elif args.scenario == "cache":
            cache(args, targets)
        else:
            upload(args, targets, origin, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
