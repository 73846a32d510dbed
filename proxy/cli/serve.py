"""``rankgate serve``: one process, or a supervisor and N workers."""

from __future__ import annotations

import argparse

from proxy.cli.options import add_config, config_path


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.config.settings import load_settings
    from proxy.serve.eventloop import run
    from proxy.serve.logs import setup_logging
    from proxy.serve.server import serve
    from proxy.serve.supervisor import resolve_workers, serve_fleet

    args.config = config_path(args.config, "serve")
    settings = load_settings(args.config)
    if args.workers is not None:
        settings = settings.model_copy(update={"workers": args.workers})
    setup_logging(settings.logging)
    # One worker: this process serves. More: a supervisor and N worker processes.
    workers = resolve_workers(settings.workers)
    if workers == 1:
        run(serve(settings))
        return 0
    return serve_fleet(settings, args.config, workers)


def _workers(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"want a number >= 0, got {value!r}")
    return int(value)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("serve", help="run the proxy")
    add_config(parser)
    parser.add_argument(
        "--workers",
        "-w",
        type=_workers,
        default=None,
        metavar="N",
        help="worker processes sharing the port (0 = one per CPU; default: config 'workers')",
    )
    parser.set_defaults(func=cmd_serve)
