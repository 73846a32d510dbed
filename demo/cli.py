"""``rankgate demo``: everything in one process until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from demo.data import DataError
from demo.run import DEFAULT_CONFIG, DEFAULT_DATA, FEED_SIZE, Demo, DemoError, DemoOptions


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"want a port 0..65535 (0 = any free port), got {value!r}")
    return int(value)


async def run(options: DemoOptions) -> int:
    from proxy.serve.server import tune_gc

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo = Demo(options)
    try:
        await demo.start()
        tune_gc()
        print(demo.banner(), flush=True)
        await stop.wait()
        print("\nstopping the demo...", file=sys.stderr, flush=True)
    finally:
        await demo.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("demo stopped.", file=sys.stderr, flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.config.settings import load_settings
    from proxy.serve import eventloop
    from proxy.serve.logs import setup_logging

    setup_logging(load_settings(args.config).logging)
    options = DemoOptions(
        config=Path(args.config),
        data=Path(args.data),
        host=args.host,
        origin_port=args.origin_port,
        port=args.port,
        admin_port=args.admin_port,
        feed_size=args.feed_size,
    )
    result: list[int] = []

    async def main() -> None:
        result.append(await run(options))

    try:
        eventloop.run(main())
    except (DataError, DemoError) as exc:
        print(f"rankgate demo: {exc}", file=sys.stderr)
        return 1
    return result[0] if result else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "demo",
        help="run the demo: embedded Valkey, a catalogue origin, rankgate in front, a page",
        description="Starts an embedded Valkey with the demo embeddings, the demo origin "
        "(default :8000), rankgate in front of it (:8080, admin :9090) and serves the demo "
        "page at the proxy's address. Ctrl-C stops everything.",
    )
    parser.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="demo rankgate.yaml")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="demo embeddings (.npz)")
    parser.add_argument("--host", default="127.0.0.1", help="address of all three listeners")
    parser.add_argument("--port", type=_port, help="proxy port (default: config, 8080)")
    parser.add_argument("--origin-port", type=_port, help="origin port (default: config, 8000)")
    parser.add_argument("--admin-port", type=_port, help="admin port (default: config, 9090)")
    parser.add_argument(
        "--feed-size", type=int, default=FEED_SIZE, help="items the page asks for (default 100)"
    )
    parser.set_defaults(func=cmd_demo)
