"""Big feeds with the re-rank processes on and off, in one run: a pass-through client's p99
alone and beside two clients re-ranking 10,000-item feeds, and those feeds' requests/s.

    python bench/offload.py [--rounds 2] [--duration 4] [--workers 1]

Two rankgates from the working tree (``feed.offload_workers`` N and 0), one origin, one
Valkey, measured in turns. Needs wrk.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path

import common
import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        redis_url = common.seeded_redis(stack, 10000)
        origin_port = common.free_port()
        origin = f"http://127.0.0.1:{origin_port}"
        common.spawn_origin(stack, origin_port, 100)
        common.wait_port(origin_port)
        lua = tmp / "users.lua"
        lua.write_text(common.LUA)
        model = common.default_model(tmp)
        routes = textwrap.dedent(run.ROUTES.format(model=model, budget=50))
        urls = {}
        for name, workers in (("pool on", args.workers), ("pool off", 0)):
            (tmp / name).mkdir()
            port, admin = common.free_port(), common.free_port()
            extra = f"feed: {{offload_workers: {workers}}}\n"
            cfg = common.write_rankgate_config(
                tmp / name,
                port=port,
                admin_port=admin,
                origin=origin,
                redis_url=redis_url,
                model=model,
                routes=routes,
                extra=extra,
            )
            common.spawn(stack, sys.executable, "-m", "proxy", "serve", "--config", str(cfg))
            run.ready_after(f"http://127.0.0.1:{admin}", time.monotonic())
            urls[name] = f"http://127.0.0.1:{port}"
            run.get(f"{urls[name]}/api/feed/10000")  # starts the pool
            time.sleep(2)
            outcome = run.get(f"{urls[name]}/api/feed/10000")[1]
            print(f"{name}: {outcome}; {run.LAST_TIMING[0]}")
        for k in range(args.rounds):
            for name, url in urls.items():
                big = f"{url}/api/feed/10000"
                rps = common.wrk(big, 2, args.duration, lua)["rps"]
                alone, busy = run.head_of_line(f"{url}/static", big, args.duration, lua)
                print(
                    f"round {k} {name:8}  pass p99 alone {alone:6.2f} ms, beside 10,000-item "
                    f"re-ranks {busy:6.2f} ms ({busy / alone:4.1f}x); 10,000 items c2 {rps:5.1f}/s"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
