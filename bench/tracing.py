"""What tracing costs, in one run: rankgate from the working tree served side by side
with tracing off, on at 10% and on at 100% sampling (new traces: the load sends no
traceparent), exporting to a local OTLP/HTTP receiver, measured in turns.

    python bench/tracing.py [--rounds 4] [--duration 3]

Reports medians of p50 at concurrency 1, requests/s at 16 and CPU per request of the
proxy process, with ratios to `off`, and how many spans the receiver got.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import common

# A collector stand-in: accepts POST /v1/traces, counts the bytes, answers 200.
RECEIVER = textwrap.dedent("""\
    import sys
    from aiohttp import web
    got = {"posts": 0, "bytes": 0}
    async def traces(request):
        got["posts"] += 1
        got["bytes"] += len(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")
    async def count(request):
        return web.json_response(got)
    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """)

VARIANTS = {
    "off": "",
    "on 10%": "tracing: {enabled: true, endpoint: 'URL', sample_ratio: 0.1}\n",
    "on 100%": "tracing: {enabled: true, endpoint: 'URL', sample_ratio: 1.0}\n",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/tracing.py needs wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        redis_url = common.seeded_redis(stack, 1000)
        origin_port, receiver_port = common.free_port(), common.free_port()
        origin = f"http://127.0.0.1:{origin_port}"
        receiver = f"http://127.0.0.1:{receiver_port}"
        common.spawn_origin(stack, origin_port, 100)
        common.spawn(stack, sys.executable, "-c", RECEIVER, str(receiver_port))
        urls: dict[str, str] = {}
        pids: dict[str, int] = {}
        for name, extra in VARIANTS.items():
            cfg, port = common.config_dir(
                tmp / name.replace(" ", "-").replace("%", "pct"),
                origin=origin,
                redis_url=redis_url,
                workers=1,
                extra=extra.replace("URL", receiver),
            )
            proc = common.spawn(stack, sys.executable, "-m", "proxy", "serve", "--config", str(cfg))
            pids[name], urls[name] = proc.pid, f"http://127.0.0.1:{port}/api/feed"
        for url in [*urls.values(), f"{origin}/api/feed", f"{receiver}/count"]:
            common.wait_port(int(url.split(":")[2].split("/")[0]))
        lua = tmp / "users.lua"
        lua.write_text(common.LUA)
        common.warm(urls, lua)
        med = common.measure_in_turns(urls, pids, args.rounds, args.duration, lua)
        with urllib.request.urlopen(f"{receiver}/count") as resp:
            received = resp.read().decode()
    base = med["off"]
    print(f"medians of {args.rounds} rounds; ratios to off")
    print(f"{'variant':10} {'p50 c1':>9} {'rps c16':>9} {'rps ratio':>10} {'cpu/req':>9}")
    for name, (lat, thr, us) in med.items():
        print(f"{name:10} {lat:7.0f}us {thr:9.0f} {thr / base[1]:10.3f} {us * 1e6:7.0f}us")
    print(f"receiver (OTLP/HTTP posts and bytes so far): {received}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
