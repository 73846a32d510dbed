"""The feed route's response: the re-ranked body with per-user cache headers, or the
origin's bytes as they came with the reason they were not re-ranked.

Headers on every feed response: ``X-Rerank`` (applied, or skipped with its reason),
``Server-Timing`` (ours after the origin's), and ``Vary`` for what chose the user and
the arm (the same URL is re-ranked for other users). A re-ranked body also gets
``Cache-Control: private`` and loses the origin's ``ETag`` (it names other bytes). So
does every response that carries an ``X-Rankgate-Id`` (a skipped one too), and it loses
``Last-Modified`` as well: the token names one request, and a shared cache that kept it
would hand it to other users, whose clicks would then join that one exposure.
"""

from __future__ import annotations

import time

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.http.forward import RESPONSE, Forwarder
from proxy.http.headers import HeaderFilter, append_token
from proxy.outcome.errors import Outcome, RankgateError, Reason
from proxy.outcome.record import RequestRecord

_TIMING_NAMES = {"inference": "infer"}
# The origin's headers on a body we send whole: its length is ours to set, and a
# re-ranked body's ETag would name other bytes.
APPLIED = HeaderFilter(("Content-Length", "ETag"))
BUFFERED = HeaderFilter(("Content-Length",))
# A timing's name in Server-Timing (stage names are few: plugin:NAME per plugin).
_METRIC_NAMES: dict[str, str] = {}


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def private_cache_control(value: str | None) -> str:
    """The origin's Cache-Control made per-user: public/s-maxage go, private comes in."""
    if not value:
        return "private"
    keep = []
    for directive in value.split(","):
        d = directive.strip()
        name = d.split("=", 1)[0].strip().lower()
        if not d or name in ("public", "s-maxage", "private", "proxy-revalidate"):
            continue
        keep.append(d)
    return ", ".join(["private", *keep])


def _metric_name(stage: str) -> str:
    name = _TIMING_NAMES.get(stage, stage).replace(":", "-")
    if len(_METRIC_NAMES) < 256:
        _METRIC_NAMES[stage] = name
    return name


def server_timing(timings: dict[str, float], prior: str | None = None) -> str:
    names = _METRIC_NAMES
    ours = ", ".join(
        [f"{names.get(k) or _metric_name(k)};dur={v * 1000:.2f}" for k, v in timings.items()]
    )
    return f"{prior}, {ours}" if prior else ours


def _finish_headers(
    headers: CIMultiDict[str],
    record: RequestRecord,
    label: str,
    token: str | None,
    private: bool = False,
) -> None:
    """``private``: Cache-Control made private and ETag dropped already (a re-ranked body)."""
    headers["X-Rerank"] = label
    if token is not None:
        headers["X-Rankgate-Id"] = token
        if not private:
            headers["Cache-Control"] = private_cache_control(headers.get("Cache-Control"))
            headers.popall("ETag", None)
        headers.popall("Last-Modified", None)
    record.timings["total"] = time.perf_counter() - record.started
    headers["Server-Timing"] = server_timing(record.timings, headers.get("Server-Timing"))


def applied(
    record: RequestRecord,
    upstream: aiohttp.ClientResponse,
    vary: tuple[str, ...],
    body: bytes,
    token: str | None = None,
) -> web.Response:
    # The response's own headers filled in place (a Response given headers copies them).
    response = web.Response(status=upstream.status, reason=upstream.reason, body=body)
    headers = response.headers
    headers.extend(APPLIED.copy(upstream.headers))
    headers["Cache-Control"] = private_cache_control(headers.get("Cache-Control"))
    append_token(headers, "Vary", vary)
    record.outcome = Outcome.APPLIED
    label = f"applied; model={record.model}; arm={record.arm}"
    _finish_headers(headers, record, label, token, private=True)
    record.status, record.bytes_out = upstream.status, len(body)
    return response


def _skip_headers(
    headers: CIMultiDict[str],
    record: RequestRecord,
    vary: tuple[str, ...],
    why: RankgateError,
    token: str | None,
) -> None:
    reason = why.reason
    record.outcome, record.reason, record.plugin = reason.outcome, reason, why.plugin
    append_token(headers, "Vary", vary)
    label = f"skipped; reason={reason}"
    if reason is Reason.CONTROL:
        label += f"; model=none; arm={record.arm}"
    if why.plugin is not None:
        label += f"; plugin={why.plugin}"
    _finish_headers(headers, record, label, token)


async def stream_skipped(
    forwarder: Forwarder,
    request: web.BaseRequest,
    record: RequestRecord,
    upstream: aiohttp.ClientResponse,
    vary: tuple[str, ...],
    why: RankgateError,
    first: bytes = b"",
    token: str | None = None,
    extra: dict[str, str] | None = None,
) -> web.StreamResponse:
    """The origin's response streamed on (``first``: body bytes already read; ``extra``:
    headers of ours, e.g. an explanation)."""
    headers = CIMultiDict(RESPONSE.copy(upstream.headers))
    _skip_headers(headers, record, vary, why, token)
    if extra:
        headers.update(extra)
    record.status = upstream.status
    return await forwarder.stream_back(request, upstream, headers, first)


def buffered_skipped(
    record: RequestRecord,
    upstream: aiohttp.ClientResponse,
    vary: tuple[str, ...],
    why: RankgateError,
    body: bytes,
    token: str | None = None,
) -> web.Response:
    """The origin's body, read whole for re-ranking, served as it came."""
    response = web.Response(status=upstream.status, reason=upstream.reason, body=body)
    headers = response.headers
    headers.extend(BUFFERED.copy(upstream.headers))
    _skip_headers(headers, record, vary, why, token)
    record.status, record.bytes_out = upstream.status, len(body)
    return response
