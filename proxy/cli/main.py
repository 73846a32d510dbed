"""The ``rankgate`` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from proxy import __version__
from proxy.config.yamlload import ConfigError

# Modules that add their own subcommands through ``register(subparsers)``.
COMMAND_MODULES = (
    "proxy.preflight.init",
    "proxy.preflight.check",
    "proxy.store.loader",
    "proxy.cli.model",
    "proxy.cli.routes",
    "proxy.cli.experiments",
    "proxy.cli.edge",
    "demo.cli",
)

DEFAULT_CONFIG = "config/rankgate.yaml"
# What `rankgate init` writes into the directory it runs in.
LOCAL_CONFIG = "rankgate.yaml"
CONFIG_HELP = (
    f"static config YAML (default: ./{LOCAL_CONFIG} if there is one, else {DEFAULT_CONFIG})"
)


def config_path(given: str | None) -> str:
    """--config, else ./rankgate.yaml (`rankgate init`'s), else config/rankgate.yaml."""
    if given is not None:
        return given
    return LOCAL_CONFIG if os.path.isfile(LOCAL_CONFIG) else DEFAULT_CONFIG


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.config.settings import load_settings
    from proxy.serve.eventloop import run
    from proxy.serve.logs import setup_logging as setup_logs
    from proxy.serve.server import serve
    from proxy.serve.supervisor import resolve_workers, serve_fleet

    args.config = config_path(args.config)
    settings = load_settings(args.config)
    if args.workers is not None:
        settings = settings.model_copy(update={"workers": args.workers})
    setup_logs(settings.logging)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rankgate", description="A reverse proxy that re-ranks JSON feeds per user."
    )
    parser.add_argument("--version", action="version", version=f"rankgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", "-c", default=None, help=CONFIG_HELP)
    serve.add_argument(
        "--workers",
        "-w",
        type=_workers,
        default=None,
        metavar="N",
        help="worker processes sharing the port (0 = one per CPU; default: config 'workers')",
    )
    serve.set_defaults(func=cmd_serve)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `rankgate check | head`: the reader left. Quietly, as the Python docs advise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
