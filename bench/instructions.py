"""Instructions per request of two revisions of rankgate, counted by valgrind: a figure
the machine's load does not move (CPU time does: caches, frequency, the neighbours).

    python bench/instructions.py BASE [HEAD] [--duration 20] [--access-log]

Each revision (HEAD: the working tree by default) is checked out as ``bench/compare.py``
does and served, one worker, under ``valgrind --tool=callgrind`` with instrumentation off
until warm; then wrk (c4) sends a pass-through (``/static``) or a re-rank (the 100-item
feed) for ``--duration`` seconds while callgrind counts the process's instructions; the
count, less the count of as long idle just after, is divided by the requests wrk saw.
Under valgrind a request takes ~50x its time: a run counts a few hundred requests, enough
for a ratio, not for latency. Start-up under valgrind takes 30-70 s per revision. Needs
valgrind, wrk and git.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import common
from compare import worktree

PATHS = {"pass": "/static", "re-rank": "/api/feed"}


def count(tree: Path, cfg: Path, port: int, path: str, duration: int, lua: Path) -> float:
    """Instructions per request of ``tree``'s rankgate (under callgrind) for ``path``."""
    with ExitStack() as stack:
        out = cfg.parent / f"callgrind-{time.monotonic_ns()}"
        out.mkdir()
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
        proc = common.spawn(
            stack,
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}/cg.%p",
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            str(cfg),
            env=env,
            cwd=tree,
        )
        common.wait_port(port, timeout=600)
        url = f"http://127.0.0.1:{port}{path}"
        _wrk(url, 5, lua)  # warm: pools, caches, the item vectors
        rerank = common.check_headers(url)
        if path != "/static" and not rerank.startswith("applied"):
            raise SystemExit(f"bench/instructions.py: {tree}: re-ranking not applied: {rerank}")
        ctl = ["callgrind_control"]
        subprocess.run([*ctl, "-i", "on", str(proc.pid)], capture_output=True, check=True)
        started = time.monotonic()
        requests = _wrk(url, duration, lua)
        took = time.monotonic() - started
        subprocess.run([*ctl, "-d", str(proc.pid)], capture_output=True, check=True)
        # The same time idle: what the process does per second whatever the load (its
        # timers, the routes watcher), taken off the busy count.
        time.sleep(took)
        subprocess.run([*ctl, "-d", str(proc.pid)], capture_output=True, check=True)
        proc.terminate()
        proc.wait(120)  # valgrind's exit takes a while; the stack's wait allows 10 s
        busy, idle = (_totals(out / f"cg.{proc.pid}.{k}") for k in (1, 2))
        return (busy - idle) / max(requests, 1)


def _totals(dump: Path) -> int:
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"bench/instructions.py: no totals in {dump}")


def _wrk(url: str, duration: int, lua: Path) -> float:
    """Requests wrk (c4) made in ``duration`` s; under valgrind some may time out (wrk
    then exits 1), which the count of those answered does not include."""
    cmd = ["wrk", "-t2", "-c4", f"-d{duration}s", "--timeout", "10s", "-s", str(lua), url]
    done = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return common.parse_wrk(done.stdout)["requests"]
    except (KeyError, ValueError, AttributeError):
        raise SystemExit(f"bench/instructions.py: wrk: {done.stdout} {done.stderr}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("head", nargs="?", help="a revision (default: the working tree)")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "wrk", "git"):
        if not shutil.which(tool):
            print(f"bench/instructions.py needs {tool}", file=sys.stderr)
            return 2
    results: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        trees = {"base": worktree(stack, args.base, tmp / "base")}
        trees["head"] = worktree(stack, args.head, tmp / "head") if args.head else common.ROOT
        redis_url = common.seeded_redis(stack, 1000)
        origin_port = common.free_port()
        origin = f"http://127.0.0.1:{origin_port}"
        common.spawn_origin(stack, origin_port, 100)
        common.wait_port(origin_port)
        lua = tmp / "users.lua"
        lua.write_text(common.LUA)
        for target, path in PATHS.items():
            for name, tree in trees.items():
                cfg, port = common.config_dir(
                    tmp / f"conf-{name}-{target}",
                    origin=origin,
                    redis_url=redis_url,
                    workers=1,
                    access_log=args.access_log,
                    budget_ms=60_000,  # under valgrind a request takes ~50x its time
                )
                cfg.write_text(cfg.read_text().replace("timeout_ms: 20", "timeout_ms: 60000"))
                results[(name, target)] = count(tree, cfg, port, path, args.duration, lua)
    print(f"base {args.base}, head {args.head or 'working tree'}: instructions per request")
    for target in PATHS:
        base, head = results[("base", target)], results[("head", target)]
        print(f"{target:8} base {base:11,.0f}  head {head:11,.0f}  head/base {head / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
