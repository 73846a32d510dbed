"""One worker process of ``rankgate serve --workers N`` (``python -m proxy.serve.worker``).

A fresh interpreter (never a fork of a process that has onnxruntime threads) that serves
like a single process, with these differences: it shares the public port with its
siblings (SO_REUSEPORT), its admin listener is private (127.0.0.1, port 0, reported to
the supervisor through the control pipe), it uses the supervisor's embedded Valkey when
there is one, and it drains and exits when the supervisor is gone (EOF on the life pipe,
which the supervisor holds open even across its own SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

import orjson

from proxy.config.settings import load_settings
from proxy.config.yamlload import ConfigError
from proxy.serve.eventloop import run
from proxy.serve.logs import setup_logging
from proxy.serve.server import ProxyServer, serve

log = logging.getLogger("rankgate.worker")

REDIS_URL_ENV = "RANKGATE_REDIS_URL"  # the embedded Valkey the supervisor started
WORKER_ENV = "RANKGATE_WORKER"  # this worker's index


async def watch_supervisor(life_fd: int) -> None:
    """EOF on the life pipe: the supervisor is gone, so drain and exit."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(life_fd, "rb", buffering=0)
    )
    try:
        await reader.read()
    finally:
        transport.close()
    log.warning("the supervisor is gone: draining")
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rankgate-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--life-fd", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    update: dict[str, Any] = {"listen": settings.listen.model_copy(update={"port": args.port})}
    if os.environ.get(REDIS_URL_ENV):
        update["redis"] = settings.redis.model_copy(update={"url": os.environ[REDIS_URL_ENV]})
    settings = settings.model_copy(update=update)
    setup_logging(settings.logging)
    tasks: list[asyncio.Task[None]] = []

    def on_ready(server: ProxyServer) -> None:
        message = {"event": "ready", "pid": os.getpid(), "admin_port": server.admin_port}
        with contextlib.suppress(OSError):
            os.write(args.control_fd, orjson.dumps(message) + b"\n")
        tasks.append(asyncio.get_running_loop().create_task(watch_supervisor(args.life_fd)))

    try:
        run(
            serve(
                settings,
                reuse_port=True,
                admin_host="127.0.0.1",
                admin_port=0,
                role="worker",
                on_ready=on_ready,
                force_on_second_signal=False,
            )
        )
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
