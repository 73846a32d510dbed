"""``rankgate explain --user ID URL``: why this user gets this order.

Asks the origin for the page as the proxy would, runs the same stages (the route's match,
user, arm, items, vectors from Redis or the embedded Valkey, the model, the plugins), and
prints each served item's origin position, score and what each rule did to it, as a table
or ``--json``. The work: proxy/feed/explain.py; the description: proxy/feed/explanation.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from proxy.cli.options import add_config, config_path
from proxy.config.settings import Settings, load_settings
from proxy.feed.explain import explain
from proxy.feed.explanation import Report
from proxy.feed.state import FeedServices
from proxy.http.forward import Forwarder
from proxy.routing.current import SnapshotStore
from proxy.serve.runtime import embedded_valkey
from proxy.store.connect import connect_store

# A one-off command opens its Redis connection cold; the serving timeout (20 ms by
# default) is for a warm pool. The explanation is about the order, not the latency.
MIN_REDIS_TIMEOUT_MS = 1000.0


async def run(settings: Settings, target: str, user: str, headers: dict[str, str],
              cookies: dict[str, str]) -> Report:  # fmt: skip
    redis_cfg = settings.redis.model_copy(
        update={"timeout_ms": max(settings.redis.timeout_ms, MIN_REDIS_TIMEOUT_MS)}
    )
    async with contextlib.AsyncExitStack() as stack:
        redis_url = settings.redis.url
        if redis_url is None:
            redis_url = await stack.enter_async_context(embedded_valkey(settings))
        embeddings = await connect_store(redis_url, redis_cfg, settings.embeddings)
        stack.push_async_callback(embeddings.close)
        forwarder = Forwarder(settings.origin, settings.listen)
        stack.push_async_callback(forwarder.close)
        await forwarder.start()
        store = SnapshotStore(settings.routes_path, settings.embeddings.dim)
        await asyncio.to_thread(store.load_initial)
        f = settings.feed
        svc = FeedServices(forwarder, embeddings, f.max_body_bytes, f.thread_min_items)
        return await explain(svc, store.current, target, user, headers, cookies)


async def ask_admin(settings: Settings, target: str, user: str, headers: dict[str, str],
                    cookies: dict[str, str]) -> Report:  # fmt: skip
    """The same, asked of the rankgate that serves this config (its admin port)."""
    admin = settings.admin
    host = "127.0.0.1" if admin.host in ("0.0.0.0", "::", "") else admin.host
    query = [("user", user), ("path", target)]
    query += [("header", f"{k}: {v}") for k, v in headers.items()]
    query += [("cookie", f"{k}={v}") for k, v in cookies.items()]
    auth = {"Authorization": f"Bearer {admin.token}"} if admin.token else {}
    url = f"http://{host}:{admin.port}/admin/explain?{urlencode(query)}"
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, headers=auth) as resp,
    ):
        body = await resp.json(content_type=None)
        if resp.status != 200:
            raise AdminError(f"{url.split('?')[0]}: {resp.status} {body.get('error', body)}")
        return dict(body)


class AdminError(Exception):
    pass


def target_of(url: str) -> str:
    """The path and query of URL (a full URL, or a path)."""
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render(report: Report) -> str:
    """The report as text: a header line, then per array a table in served order."""
    if report.get("route") is None:
        return f"no route matches {report.get('path')}: served as the origin sends it"
    head = (
        f"route {report['route']}  user {report['user']}  arm {report['arm']}  "
        f"model {report['model']}"
    )
    if report.get("interleaved_with"):
        head += f" (interleaved with {report['interleaved_with']})"
    verdict = report["outcome"] + (f": {report['reason']}" if report["reason"] else "")
    lines = [
        head,
        f"{verdict}; rules: {', '.join(report['rules']) or 'none'}; "
        f"took {report['took_ms']:.1f} ms (route budget {report['budget_ms']:g} ms)",
    ]
    arrays = report["arrays"]
    for k, arr in enumerate(arrays):
        if len(arrays) > 1:
            lines.append(f"array {k + 1} of {len(arrays)}")
        lines.append(f"{'slot':>4} {'origin':>6}  {'id':<16} {'score':>9} {'final':>9}  effects")
        for it in arr["items"]:
            lines.append(_row(str(it["slot"]), it))
        for it in arr.get("filtered", []):
            lines.append(_row("-", it))
    return "\n".join(lines)


def _row(slot: str, it: dict[str, Any]) -> str:
    effects = "; ".join(it.get("effects", []))
    team = f"[{it['team']}] " if it.get("team") else ""
    return (
        f"{slot:>4} {it['origin']:>6}  {it['id']!s:<16} {_num(it.get('score')):>9} "
        f"{_num(it.get('final_score')):>9}  {team}{effects}"
    ).rstrip()


def _pairs(values: list[str], sep: str, what: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, found, rest = value.partition(sep)
        if not found or not name.strip():
            raise SystemExit(f"rankgate explain: {what} {value!r}: want NAME{sep}VALUE")
        out[name.strip()] = rest.strip()
    return out


def cmd_explain(args: argparse.Namespace) -> int:
    settings = load_settings(config_path(args.config, "explain"))
    headers = _pairs(args.header, ":", "--header")
    cookies = _pairs(args.cookie, "=", "--cookie")
    work = ask_admin if args.admin else run
    try:
        report = asyncio.run(work(settings, target_of(args.url), args.user, headers, cookies))
    except (aiohttp.ClientError, TimeoutError) as exc:
        who = "the admin port" if args.admin else "the origin"
        print(f"rankgate explain: {who} did not answer: {exc}", file=sys.stderr)
        return 1
    except AdminError as exc:
        print(f"rankgate explain: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report.get("route") is not None else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("explain", help="why a user gets a feed in its order, item by item")
    add_config(parser)
    parser.add_argument("--user", required=True, metavar="ID", help="the user id to explain for")
    parser.add_argument(
        "url", metavar="URL", help="the feed's URL or path, e.g. /api/feed?limit=20"
    )
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    parser.add_argument(
        "--admin", action="store_true",
        help="ask the rankgate serving this config, through its admin port (admin.host, "
        "admin.port, admin.token), instead of running the stages here",
    )  # fmt: skip
    parser.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'",
        help="a request header (e.g. one that chooses an experiment arm); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--cookie", action="append", default=[], metavar="NAME=VALUE",
        help="a request cookie; repeatable",
    )  # fmt: skip
    parser.set_defaults(func=cmd_explain)
