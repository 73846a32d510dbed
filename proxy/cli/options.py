"""The one ``--config`` rule every command follows.

``--config FILE`` when given; else ``./rankgate.yaml`` (what ``rankgate init`` writes)
when there is one; else a clear error naming the flag. Commands for which a config is
optional (``embeddings load --redis-url``, ``edge kv``) get ``None`` instead of the error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

LOCAL_CONFIG = "rankgate.yaml"
CONFIG_HELP = f"rankgate.yaml to use (default: ./{LOCAL_CONFIG} when there is one)"


class NoConfig(Exception):
    """No --config and no ./rankgate.yaml: the message names the flag."""

    def __init__(self, command: str) -> None:
        super().__init__(
            f"rankgate {command}: no config: pass --config FILE, or run it where "
            f"{LOCAL_CONFIG} is (`rankgate init` writes one)"
        )


def add_config(parser: argparse.ArgumentParser, help: str = CONFIG_HELP) -> None:
    parser.add_argument("--config", "-c", default=None, metavar="FILE", help=help)


def config_path(given: str | None, command: str) -> str:
    """--config, else ./rankgate.yaml; raises NoConfig when there is neither."""
    found = optional_config(given)
    if found is None:
        raise NoConfig(command)
    return found


def optional_config(given: str | None) -> str | None:
    """--config, else ./rankgate.yaml, else None."""
    if given is not None:
        return given
    return LOCAL_CONFIG if Path(LOCAL_CONFIG).is_file() else None
