"""``rankgate experiments report``: read the exposure log and say which arm wins.

    rankgate experiments report [--config rankgate.yaml] [--route NAME] [--since 24h]
                                [--from FILE_OR_DIR ...] [--json] [--html FILE]
                                [--fixed-horizon [UNITS]]
                                [--stream KEY] [--redis-url URL]
    rankgate experiments plan --baseline-ctr 0.12 --mde 5% [--units-per-day N]

Without ``--from`` it reads where the config's ``exposures:`` section writes: the Redis
Stream (``exposures.stream`` on ``exposures.redis_url``, else ``redis.url``, else the
config's embedded Valkey: the running one, or started for the read and stopped after it,
as ``embeddings load`` does) or, for ``sink: jsonl``, the ``*.jsonl`` files in
``exposures.path``. ``--stream``/``--redis-url`` read a stream whatever the sink.
routes.yaml (named by the config) gives the arm order and the split the sample ratio
test expects; ``readout:`` in the config tunes the statistics (proxy/readout/sequential.py).
Exit status: 0, 1 when the log cannot be read, 2 for a bad config.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import orjson
import redis

from proxy.cli import experiments_plan, experiments_status
from proxy.cli.options import add_config, config_path
from proxy.cli.report_text import render_text
from proxy.config import yamlload
from proxy.config.routes import RoutesFile
from proxy.config.settings import Settings, load_settings
from proxy.readout.html import render_html
from proxy.readout.join import Readout
from proxy.readout.logreader import (
    DEFAULT_STREAM,
    LogStats,
    Record,
    jsonl_files,
    read_jsonl,
    read_stream,
)
from proxy.readout.report import Report
from proxy.readout.verdict import Tuning

CHART_POINTS = 20  # cut-offs through the log for the --html page's lift over time
_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration(text: str) -> int:
    """'30m' / '24h' / '7d' / '90s' / '2w' / '1.5h' -> milliseconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(
            f"want a number and a unit (s, m, h, d, w), e.g. 30m or 7d; got {text!r}"
        )
    return int(float(found.group(1)) * _UNITS_MS[found.group(2)])


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


class SourceError(Exception):
    """The log cannot be read; the message is for the person at the terminal."""


def _records(
    args: argparse.Namespace,
    settings: Settings,
    stats: LogStats,
    since_ms: int | None,
    stack: contextlib.ExitStack,
) -> tuple[str, Iterator[Record]]:
    """(a description of the source, its records)."""
    if args.sources:
        try:
            files = jsonl_files(args.sources)
        except FileNotFoundError as exc:
            raise SourceError(str(exc)) from None
        return ", ".join(map(str, args.sources)), read_jsonl(files, stats, since_ms)
    # The exposures: section may be absent in an older config: its defaults hold then.
    exposures: Any = getattr(settings, "exposures", None)
    if getattr(exposures, "sink", "redis") == "jsonl" and not (args.stream or args.redis_url):
        directory = Path(getattr(settings, "exposures_dir", settings.base_dir / "exposures"))
        if not directory.is_dir():
            raise SourceError(f"{directory}: no such directory (exposures.path)")
        return str(directory), read_jsonl(jsonl_files([directory]), stats, since_ms)
    url = args.redis_url or getattr(exposures, "redis_url", None) or settings.redis.url
    if not url:
        url = _embedded(settings, stack)
    key = args.stream or getattr(exposures, "stream", DEFAULT_STREAM)
    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    return f"{_redact(url)} stream {key}", read_stream(client, key, stats, since_ms)


def _embedded(settings: Settings, stack: contextlib.ExitStack) -> str:
    """The config's embedded Valkey (no redis.url): the one `rankgate serve` runs, or
    started on its data for this read and stopped after it."""
    from proxy.store.valkey import EmbeddedValkey, EmbeddedValkeyError

    server = EmbeddedValkey.for_settings(settings)
    try:
        url = server.start()
    except (EmbeddedValkeyError, OSError) as exc:
        raise SourceError(f"the embedded Valkey in {server.dir}: {exc}") from None
    stack.callback(server.stop)
    how = "started for this read" if server.started else f"running, pid {server.pid}"
    print(f"rankgate: embedded Valkey at {url} ({how})", file=sys.stderr)
    return url


def build_report(args: argparse.Namespace) -> tuple[Report, LogStats, str]:
    args.config = config_path(args.config, "experiments report")
    settings = load_settings(args.config)
    routes = yamlload.load(RoutesFile, settings.routes_path).routes
    stats = LogStats()
    since_ms = None if args.since is None else int(time.time() * 1000) - args.since
    readout = Readout(route=args.route)
    with contextlib.ExitStack() as stack:
        where, records = _records(args, settings, stats, since_ms, stack)
        try:
            readout.add_all(records)
        except redis.RedisError as exc:
            raise SourceError(f"{where}: {exc}") from None
        except OSError as exc:
            raise SourceError(f"{exc.filename or where}: {exc.strerror or exc}") from None
    return readout.result(routes, tuning_of(args, settings), _points(args)), stats, where


def tuning_of(args: argparse.Namespace, settings: Settings) -> Tuning:
    """readout: of the config, and --fixed-horizon (UNITS, else readout.expected_units)."""
    conf = settings.readout
    planned = args.fixed_horizon
    if planned is not None and planned <= 0:
        planned = conf.expected_units
    return Tuning(conf.alpha, conf.expected_units, conf.min_effect, planned, conf.min_units)


def _points(args: argparse.Namespace) -> int:
    return CHART_POINTS if getattr(args, "html", None) else 0


def warn_malformed(stats: LogStats, out: TextIO) -> None:
    if not stats.malformed:
        return
    reasons = ", ".join(f"{reason} ({n})" for reason, n in stats.reasons.most_common())
    print(
        f"rankgate: warning: skipped {stats.malformed} malformed record(s): {reasons}; "
        f"first: {'; '.join(stats.examples)}",
        file=out,
    )


def cmd_report(args: argparse.Namespace) -> int:
    try:
        report, stats, where = build_report(args)
    except SourceError as exc:
        print(f"rankgate: {exc}", file=sys.stderr)
        return 1
    warn_malformed(stats, sys.stderr)
    if args.html:
        try:
            Path(args.html).write_text(render_html(report, where), encoding="utf-8")
        except OSError as exc:
            print(f"rankgate: {args.html}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    extras = experiments_status.report_extras(args)  # the guardrails' trips, if any
    if args.json:
        body = report.to_json()
        body["records"]["malformed"] = stats.malformed
        body["records"]["source"] = where
        print(orjson.dumps({**body, **extras}, option=orjson.OPT_INDENT_2).decode())
    else:
        render_text(report, stats, where, sys.stdout)
        experiments_status.render_extras(extras, sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("experiments", help="read out experiments from the exposure log")
    cmds = parser.add_subparsers(dest="experiments_command", required=True, metavar="ACTION")
    report = cmds.add_parser(
        "report",
        help="per route and arm: a verdict, CTR, lift, p, MRR, sample ratio, interleaving, shadow",
    )
    add_config(report)
    report.add_argument("--route", help="only this route")
    report.add_argument(
        "--since",
        type=parse_duration,
        metavar="DURATION",
        help="only records of the last DURATION (30m, 24h, 7d)",
    )
    report.add_argument(
        "--from",
        dest="sources",
        nargs="+",
        metavar="FILE_OR_DIR",
        help="read JSONL files (a directory: every *.jsonl in it) instead of the sink",
    )
    report.add_argument("--json", action="store_true", help="print JSON")
    report.add_argument(
        "--html",
        metavar="FILE",
        help="also write one self-contained page: per arm, the lift over time with its "
        "confidence band, the split, the sample ratio test and the verdict",
    )
    report.add_argument(
        "--fixed-horizon",
        nargs="?",
        type=int,
        const=0,
        default=None,
        metavar="UNITS",
        help="a fixed-horizon test planned at UNITS units (default: readout.expected_units), "
        "valid only when read once at that size; without it, always-valid intervals",
    )
    report.add_argument(
        "--stream", help=f"Redis Stream key (default: exposures.stream or {DEFAULT_STREAM})"
    )
    report.add_argument("--redis-url", help="overrides the config's redis.url")
    report.set_defaults(func=cmd_report)
    experiments_plan.register(cmds)
    experiments_status.register(cmds)
