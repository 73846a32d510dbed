"""Two revisions of rankgate side by side, in one run: the A/B a perf change needs.

    python bench/compare.py BASE [HEAD] [--rounds 6] [--duration 4] [--workers 1]

BASE and HEAD are git revisions (HEAD defaults to the working tree). Each is checked out
in a temporary worktree and served from there, behind one origin and one Valkey; the
targets are measured in turns (order reversed every other round) and medians reported,
with the origin direct and a plain aiohttp pass-through as references. On a shared
2-vCPU VM two runs of the same code differ by 60 us p50 and more, so a change is only
visible against its base in the same run. Needs wrk and git.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import common


def worktree(stack: ExitStack, rev: str, where: Path) -> Path:
    """``rev`` checked out (detached) at ``where``, removed when ``stack`` closes."""
    added = subprocess.run(
        ["git", "-C", str(common.ROOT), "worktree", "add", "--detach", "-q", str(where), rev],
        capture_output=True,
        text=True,
    )
    if added.returncode != 0:
        raise SystemExit(f"bench/compare.py: cannot check out {rev!r}: {added.stderr.strip()}")
    stack.callback(
        subprocess.run,
        ["git", "-C", str(common.ROOT), "worktree", "remove", "--force", str(where)],
        check=False,
    )
    return where


def serve(stack: ExitStack, tree: Path, cfg: Path) -> int:
    """rankgate from ``tree``: its directory first on sys.path, not the installed one."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return common.spawn(
        stack, sys.executable, "-m", "proxy", "serve", "--config", str(cfg), env=env, cwd=tree
    ).pid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("head", nargs="?", help="a revision (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--access-log", action="store_true", help="rankgate's access log on, as bench/run.py has it"
    )
    parser.add_argument("--items", type=int, default=100, help="items in the origin's feed")
    args = parser.parse_args()
    for tool in ("wrk", "git"):
        if not shutil.which(tool):
            print(f"bench/compare.py needs {tool}", file=sys.stderr)
            return 2

    # The stack (servers, worktrees) closes before the directory holding them goes.
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        trees = {"base": worktree(stack, args.base, tmp / "base")}
        trees["head"] = worktree(stack, args.head, tmp / "head") if args.head else common.ROOT
        redis_url = common.seeded_redis(stack, max(1000, args.items))
        origin_port, plain_port = common.free_port(), common.free_port()
        origin = f"http://127.0.0.1:{origin_port}"
        pids = {"origin direct": common.spawn_origin(stack, origin_port, args.items).pid}
        pids["plain"] = common.spawn(
            stack,
            sys.executable,
            str(common.HERE / "plain_proxy.py"),
            "--port",
            str(plain_port),
            "--origin",
            origin,
        ).pid
        targets = {
            "origin direct": f"{origin}/api/feed",
            "plain": f"http://127.0.0.1:{plain_port}/api/feed",
        }
        ports = [origin_port, plain_port]
        for name, tree in trees.items():
            cfg, port = common.config_dir(
                tmp / f"conf-{name}",
                origin=origin,
                redis_url=redis_url,
                workers=args.workers,
                access_log=args.access_log,
            )
            pids[f"{name} re-rank"] = pids[f"{name} pass"] = serve(stack, tree, cfg)
            targets[f"{name} re-rank"] = f"http://127.0.0.1:{port}/api/feed"
            targets[f"{name} pass"] = f"http://127.0.0.1:{port}/static"
            ports.append(port)
        for port in ports:
            common.wait_port(port)
        lua = tmp / "users.lua"
        lua.write_text(common.LUA)
        for name, url in targets.items():
            common.wrk(url, 4, 1, lua)  # warm pools and caches
            # Asked three times: on a busy machine one request may miss its Redis timeout.
            said = [common.check_headers(url) for _ in range(3)]
            if name.endswith("re-rank") and not any(s.startswith("applied") for s in said):
                print(f"{name}: re-ranking is not applied ({said[-1]})", file=sys.stderr)
                return 1

        p50: dict[str, list[float]] = {name: [] for name in targets}
        rps: dict[str, list[float]] = {name: [] for name in targets}
        cpu: dict[str, list[float]] = {name: [] for name in targets}
        for k in range(args.rounds):
            names = list(targets) if k % 2 == 0 else list(reversed(targets))
            for name in names:
                p50[name].append(common.wrk(targets[name], 1, args.duration, lua)["p50_ms"] * 1000)
                before = common.tree_cpu(pids[name])
                run = common.wrk(targets[name], 16, args.duration, lua)
                spent = common.tree_cpu(pids[name]) - before
                rps[name].append(run["rps"])
                cpu[name].append(spent / max(run["requests"], 1) * 1e6)

    report(args, targets, p50, rps, cpu)
    return 0


def report(
    args: argparse.Namespace,
    targets: dict[str, str],
    p50: dict[str, list[float]],
    rps: dict[str, list[float]],
    cpu: dict[str, list[float]],
) -> None:
    med = {
        name: (
            statistics.median(p50[name]),
            statistics.median(rps[name]),
            statistics.median(cpu[name]),
        )
        for name in targets
    }
    origin_p50, plain_rps = med["origin direct"][0], med["plain"][1]
    print(
        f"base {args.base}, head {args.head or 'working tree'}, {args.items} items: "
        f"medians of {args.rounds} rounds"
    )
    print(
        f"{'target':16} {'p50 c1':>9} {'over origin':>12} {'rps c16':>9} {'vs plain':>9} "
        f"{'cpu/req':>9}"
    )
    for name, (lat, thr, us) in med.items():
        print(
            f"{name:16} {lat:7.0f}us {lat - origin_p50:+10.0f}us {thr:9.0f} {thr / plain_rps:9.2f} "
            f"{us:7.0f}us"
        )
    print("cpu/req: CPU time of the serving process (and its children) per request at c16")


if __name__ == "__main__":
    sys.exit(main())
