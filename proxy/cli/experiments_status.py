"""``rankgate experiments status`` and ``rankgate experiments resume ROUTE ARM``: the
guardrails of a fleet, read from (and resumed in) the Redis every process shares.

    rankgate experiments status [--json]       each guarded arm: watching or tripped, the
                                               figures of each guardrail, how to resume
    rankgate experiments resume ROUTE ARM      the arm's users go back to it on every
                                               process within a poll; a new test begins
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, TextIO

import orjson
import redis
from redis.exceptions import RedisError

from proxy.cli.options import add_config, config_path
from proxy.config import yamlload
from proxy.config.routes import RoutesFile
from proxy.config.settings import load_settings
from proxy.experiments.guardrails import Guard
from proxy.experiments.guardstore import TRIPS, RedisGuardStore

__all__ = ["register"]


def _url(args: argparse.Namespace, command: str) -> tuple[str | None, Any]:
    args.config = config_path(args.config, f"experiments {command}")
    settings = load_settings(args.config)
    routes = yamlload.load(RoutesFile, settings.routes_path).routes
    return args.redis_url or settings.redis.url, routes


async def _status(url: str, routes: Any) -> list[dict[str, Any]]:
    guard = Guard(RedisGuardStore(url, timeout_s=5.0), lambda: routes)
    try:
        await guard.poll()
        await guard.check(act=False)
        return guard.describe()
    finally:
        await guard.store.close()


async def _resume(url: str, route: str, arm: str) -> tuple[bool, int]:
    store = RedisGuardStore(url, timeout_s=5.0)
    try:
        return await store.resume(route, arm)
    finally:
        await store.close()


def _stored(url: str) -> dict[str, Any]:
    # Blocking, and short: a report (maybe from files, maybe inside a loop) never waits long.
    client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        trips = client.hgetall(TRIPS)
    finally:
        client.close()
    return {"guardrails": [orjson.loads(v) for v in trips.values()]}


def report_extras(args: argparse.Namespace) -> dict[str, Any]:
    """For ``experiments report``: the trips, from the Redis of the config (or
    --redis-url); nothing when there is none. (A bandit's periods come from the exposure
    log itself, each record carrying its period: proxy/readout/periods.py.)"""
    try:
        settings = load_settings(args.config)
        url = args.redis_url or settings.redis.url
        if not url:
            return {}
        stored = _stored(url)
    except (RedisError, OSError):
        return {}
    route = getattr(args, "route", None)
    trips = [t for t in stored["guardrails"] if route in (None, t.get("route"))]
    return {"guardrails": trips} if trips else {}


def render_extras(extras: dict[str, Any], out: TextIO) -> None:
    for trip in extras.get("guardrails", []):
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(trip.get("at", 0)))
        figures = " ".join(f"{k}={v}" for k, v in trip.get("figures", {}).items())
        out.write(
            f"\nguardrail: {trip['route']} {trip['arm']} tripped {at} by {trip['guardrail']}"
            f" ({figures}); since then its users are counted with the default arm\n"
        )


def _no_url(args: argparse.Namespace) -> int:
    print(
        f"rankgate: {args.config}: redis.url is not set (an embedded Valkey lives only "
        "while rankgate runs): give --redis-url",
        file=sys.stderr,
    )
    return 2


def cmd_status(args: argparse.Namespace) -> int:
    url, routes = _url(args, "status")
    if not url:
        return _no_url(args)
    try:
        arms = asyncio.run(_status(url, routes))
    except (RedisError, OSError) as exc:
        print(f"rankgate: Redis: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps({"guardrails": arms}, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not arms:
        print("no arm has guardrails (routes.yaml: guardrails:), and none is tripped")
    for entry in arms:
        print("\n".join(render(entry)))
    return 0


def render(entry: dict[str, Any]) -> list[str]:
    """One arm's lines of the status."""
    head = f"{entry['route']} {entry['arm']}: {entry['state']} (test {entry['epoch']})"
    lines = [head]
    trip = entry.get("trip")
    if trip is not None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(trip.get("at", 0)))
        figures = " ".join(f"{k}={v}" for k, v in trip.get("figures", {}).items())
        lines.append(f"  tripped {at} by {trip.get('guardrail')}: {figures}")
        lines.append("  its users are served by the default arm; to bring it back:")
        lines.append(f"  rankgate experiments resume {entry['route']} {entry['arm']}")
    for check in entry.get("checks", []):
        figures = " ".join(f"{k}={v}" for k, v in check.items() if k not in ("guardrail", "trips"))
        lines.append(f"  {check['guardrail']}: {figures}")
    return lines


def cmd_resume(args: argparse.Namespace) -> int:
    url, _ = _url(args, "resume")
    if not url:
        return _no_url(args)
    try:
        was, epoch = asyncio.run(_resume(url, args.route, args.arm))
    except (RedisError, OSError) as exc:
        print(f"rankgate: Redis: {exc}", file=sys.stderr)
        return 1
    state = "resumed" if was else "was not tripped; its test restarts"
    print(f"{args.route} {args.arm}: {state} (test {epoch}); every process follows within 1 s")
    return 0


def register(cmds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = cmds.add_parser("status", help="guardrails: each guarded arm, watching or tripped")
    add_config(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--redis-url", help="overrides the config's redis.url")
    status.set_defaults(func=cmd_status)
    resume = cmds.add_parser("resume", help="bring back an arm a guardrail took off the air")
    add_config(resume)
    resume.add_argument("route")
    resume.add_argument("arm")
    resume.add_argument("--redis-url", help="overrides the config's redis.url")
    resume.set_defaults(func=cmd_resume)
