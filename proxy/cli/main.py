"""The ``rankgate`` command line: one module per command, each with ``register(sub)``.

Commands of other installed packages join through the entry point group
``rankgate.commands`` (the demo's is declared in pyproject.toml): the proxy never imports
them by name.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from proxy import __version__
from proxy.cli import check, edge, embeddings, experiments, explain, init, model, routes, serve
from proxy.cli.options import NoConfig
from proxy.config.yamlload import ConfigError

COMMANDS = (serve, init, check, embeddings, model, routes, experiments, edge, explain)
COMMAND_GROUP = "rankgate.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rankgate", description="A reverse proxy that re-ranks JSON feeds per user."
    )
    parser.add_argument("--version", action="version", version=f"rankgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NoConfig as exc:
        print(exc, file=sys.stderr)
        return 2
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
