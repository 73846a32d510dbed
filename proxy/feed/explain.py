"""Explaining a page on request (``rankgate explain``, ``GET /admin/explain``): the origin
asked for it as the proxy would, the same stages run with the rules watched, and the
result described by ``proxy.feed.explanation.describe``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

from multidict import CIMultiDict, MultiDict
from yarl import URL

from plugins.context import FeedContext, RequestView
from proxy.feed import rerank, stages
from proxy.feed.explanation import Report, describe
from proxy.feed.state import FeedRequest, FeedServices
from proxy.http.headers import add_forwarded
from proxy.outcome.errors import BodyError, RankgateError, Reason, Skip
from proxy.outcome.record import RequestRecord
from proxy.routing.snapshot import CompiledRoute, Snapshot

# Explaining is not serving: the stages get this long instead of the route's budget, so
# an explanation shows the rules' effects even on a cold process (its time is reported).
EXPLAIN_BUDGET_S = 10.0


async def explain(
    svc: FeedServices,
    snapshot: Snapshot,
    target: str,
    user_id: str,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
    method: str = "GET",
) -> Report:
    """Ask the origin for ``target`` (path and query) as ``user_id`` would through the
    proxy, and explain the order the proxy would serve."""
    path, _, query = target.partition("?")
    route = snapshot.match(method, path)
    if route is None:
        return {"route": None, "outcome": "pass-through", "path": path}
    hdrs: CIMultiDict[str] = CIMultiDict(headers or {})
    jar = dict(cookies or {})
    target = _place_user(route, user_id, hdrs, jar, path, query)
    if jar:
        hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
    record = RequestRecord(method, path)
    view = RequestView(hdrs, jar, MultiDict(parse_qsl(target.partition("?")[2])))
    embeddings = svc.embeddings
    ctx = FeedContext(
        None, view, route.name, record.timings, embeddings.client, embeddings.link.command
    )
    record.route = route.name
    # No client request: explain asks the origin itself (``_fetch``), so nothing of the
    # stages that reads ``st.request`` runs here.
    st = FeedRequest(svc, None, route, snapshot, record, ctx)  # type: ignore[arg-type]
    st.explains = []
    ctx.user_id = record.user_id = user_id
    stages.choose_arm(st)
    started = time.perf_counter()
    error: RankgateError | None = Skip(Reason.CONTROL) if st.model is None else None
    try:
        if error is None:
            stages.start_user_lookup(st)
        await _fetch(st, method, target, hdrs)
        error = await _rerank(st, error)
    finally:
        if st.user_task is not None and not st.user_task.done():
            st.user_task.cancel()
        if st.upstream is not None:
            st.upstream.release()
    return describe(st, error, time.perf_counter() - started)


async def _fetch(st: FeedRequest, method: str, target: str, hdrs: CIMultiDict[str]) -> None:
    """The origin's answer, asked with the forwarding headers the proxy adds (no client
    address: there is no client)."""
    forwarder = st.svc.forwarder
    add_forwarded(hdrs, None, "http", None)
    host = forwarder.origin.host_header
    if host and host != "preserve":
        hdrs["Host"] = host
    url = URL(forwarder.origin.url + target, encoded=True)
    st.upstream = await forwarder.session.request(method, url, headers=hdrs, allow_redirects=False)


async def _rerank(st: FeedRequest, error: RankgateError | None) -> RankgateError | None:
    try:
        stages.gate(st)
        await stages.read_body(st)
    except BodyError as exc:
        return error or exc
    if error is not None:
        rerank.items_only(st)
        return error
    st.deadline = asyncio.get_running_loop().time() + EXPLAIN_BUDGET_S
    try:
        await rerank.run(st)
    except RankgateError as exc:
        return exc
    return None


def _place_user(
    route: CompiledRoute,
    user_id: str,
    hdrs: CIMultiDict[str],
    jar: dict[str, str],
    path: str,
    query: str,
) -> str:
    """Put the user where the route's ``user:`` reads it first (so the origin sees the
    request a client of that user sends); returns the target, its query maybe extended."""
    sources = route.plugins.sources
    if sources is not None and sources.sources:
        kind, name = sources.sources[0]
        if kind == "cookie":
            jar.setdefault(name, user_id)
        elif kind == "header":
            hdrs.setdefault(name, user_id)
        elif name not in dict(parse_qsl(query)):
            query = f"{query}&{urlencode({name: user_id})}" if query else urlencode({name: user_id})
    return f"{path}?{query}" if query else path
