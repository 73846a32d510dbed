"""``rankgate experiments report``: read the exposure log and say which arm wins.

    rankgate experiments report [--config rankgate.yaml] [--route NAME] [--since 24h]
                                [--from FILE_OR_DIR ...] [--json]
                                [--stream KEY] [--redis-url URL]

Without ``--from`` it reads where the config's ``exposures:`` section writes: the Redis
Stream (``exposures.stream`` on ``exposures.redis_url``, else ``redis.url``, else the
config's embedded Valkey: the running one, or started for the read and stopped after it,
as ``embeddings load`` does) or, for ``sink: jsonl``, the ``*.jsonl`` files in
``exposures.path``. ``--stream``/``--redis-url`` read a stream whatever the sink.
routes.yaml (named by the config) gives the arm order and the split the sample ratio
test expects. Exit status: 0, 1 when the log cannot be read, 2 for a bad config.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import orjson
import redis

from proxy.cli.options import add_config, config_path
from proxy.config import yamlload
from proxy.config.routes import RoutesFile
from proxy.config.settings import Settings, load_settings
from proxy.readout.join import Readout
from proxy.readout.logreader import (
    DEFAULT_STREAM,
    LogStats,
    Record,
    jsonl_files,
    read_jsonl,
    read_stream,
)
from proxy.readout.report import Report, RouteReport

TOP_REASONS = 3  # skip reasons per arm in the text report (--json has them all)
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
    return readout.result(routes), stats, where


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
    if args.json:
        body = report.to_json()
        body["records"]["malformed"] = stats.malformed
        body["records"]["source"] = where
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    else:
        render_text(report, stats, where, sys.stdout)
    return 0


# --- text -------------------------------------------------------------------------------


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.0001" if value < 1e-4 else f"{value:.2g}"


def _p_is(value: float | None) -> str:
    shown = _p(value)
    return f"p < {shown[1:]}" if shown.startswith("<") else f"p = {shown}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        # Names left-aligned, figures right-aligned.
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  " + "  ".join(cells).rstrip(), file=out)


def _srm_line(r: RouteReport) -> str:
    if r.srm is None:
        return "not in routes.yaml: no configured split, no test"
    s = r.srm
    if s.p_value is None:
        return f"no test: {s.note}"
    verdict = "ALARM" if s.alarm else "warning" if s.warning else "ok"
    seen = ", ".join(f"{arm} {s.observed[arm]} ({s.expected[arm]:.1f} expected)" for arm in s.split)
    line = (
        f"{verdict}: {_p_is(s.p_value)} (chi-square, {s.df} df) over "
        f"{sum(s.observed.values())} units: {seen}"
    )
    return f"{line}; {s.note}" if s.note else line


def _block(label: str, lines: list[str], out: TextIO) -> None:
    for i, line in enumerate(lines):
        print(f"  {label if i == 0 else '':<13}{line}", file=out)


def render_route(r: RouteReport, out: TextIO) -> None:
    print(f"route {r.route}: {r.exposures} exposures", file=out)
    if not r.arms:
        print("  no exposures", file=out)
        return
    rows = [["arm", "model", "exposures", "applied", "clicks", "CTR", "95% CI", "lift", "p"]]
    rows[0].append("MRR")
    for a in r.arms:
        ci = f"{_pct(a.ctr_ci[0])}-{_pct(a.ctr_ci[1])}"
        rows.append(
            [a.arm, a.model, str(a.exposures), _pct(a.applied_share), str(a.clicks),
             _pct(a.ctr), ci, _pct(a.lift, signed=True), _p(a.p_value), _num(a.mrr, 3)]
        )  # fmt: skip
    _table(rows, out)
    skips = [
        f"{a.arm}: " + ", ".join(f"{k} {n}" for k, n in list(a.skip_reasons.items())[:TOP_REASONS])
        for a in r.arms
        if a.skip_reasons
    ]
    _block("not applied", skips, out)
    _block("sample ratio", [_srm_line(r)], out)
    for i in r.interleaving:
        verdict = f"{i.winner} wins" if i.winner else "no winner at p < 0.05"
        _block(
            "interleaved",
            [
                f"{i.arm}: {i.model_a} (A) vs {i.model_b} (B): {i.clicked_exposures} of "
                f"{i.exposures} exposures with a click; A won {i.wins_a}, B {i.wins_b}, "
                f"ties {i.ties}",
                f"preference {_num(i.preference)}, sign test {_p_is(i.p_value)}: {verdict}",
            ],
            out,
        )
    for s in r.shadow:
        _block(
            "shadow",
            [
                f"{s.model} on {', '.join(s.arms)}: {s.runs} runs, Kendall tau "
                f"{_num(s.kendall_tau)}, top-10 overlap {_pct(s.overlap_at_10)}",
                f"of {s.clicks_compared} clicked items, the shadow ranked "
                f"{_pct(s.clicked_higher_share)} higher than served",
            ],
            out,
        )


def render_text(report: Report, stats: LogStats, where: str, out: TextIO) -> None:
    print(
        f"{report.exposures} exposures, {report.events} events from {where} "
        f"({_time(report.first_ts)} to {_time(report.last_ts)})",
        file=out,
    )
    if report.orphan_events:
        print(
            f"{report.orphan_events} events follow an exposure not read "
            "(before the window, or dropped): left out",
            file=out,
        )
    if report.unserved_events:
        print(
            f"{report.unserved_events} events name an item their exposure did not serve: "
            "not credited",
            file=out,
        )
    if report.duplicate_exposures:
        print(f"{report.duplicate_exposures} duplicate exposures: counted once", file=out)
    if stats.malformed:
        print(f"{stats.malformed} malformed records skipped", file=out)
    for r in report.routes:
        print(file=out)
        render_route(r, out)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("experiments", help="read out experiments from the exposure log")
    cmds = parser.add_subparsers(dest="experiments_command", required=True, metavar="ACTION")
    report = cmds.add_parser(
        "report",
        help="per route and arm: CTR, lift, p-value, MRR, sample ratio, interleaving, shadow",
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
        "--stream", help=f"Redis Stream key (default: exposures.stream or {DEFAULT_STREAM})"
    )
    report.add_argument("--redis-url", help="overrides the config's redis.url")
    report.set_defaults(func=cmd_report)
