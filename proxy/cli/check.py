"""``rankgate check``: validate everything without serving, like ``nginx -t``
(the checks: proxy/preflight/check.py)."""

from __future__ import annotations

import argparse

from proxy.cli.options import add_config, config_path
from proxy.preflight.check import run_checks


def cmd_check(args: argparse.Namespace) -> int:
    args.config = config_path(args.config, "check")
    report = run_checks(args.config, args.offline)
    verdict = "failed" if report.failed else "successful"
    print(
        f"rankgate check: {args.config}: {report.passed} ok, {report.warned} warnings, "
        f"{report.failed} failed: test {verdict}",
        file=report.out,
    )
    return 1 if report.failed else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "check", help="validate the config, routes and models, try Redis and the origin"
    )
    add_config(parser)
    parser.add_argument(
        "--offline", action="store_true", help="check files only (not Redis or the origin)"
    )
    parser.set_defaults(func=cmd_check)
