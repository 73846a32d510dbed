"""One GET of a feed from the origin, judged as the feed path would judge it: a 200, a
JSON content type, a body under the size limit that decodes and parses; then, for one
route, whether its items and ids are in it (``probe_route``). Used by ``rankgate init``
(to see the feed), ``rankgate check`` (to probe a route) and a serving process (to probe
a reloaded route's ``sample:`` page: proxy/serve/probes.py). Blocking: run it off the
event loop.

Every way the GET can fail is a ``SampleError`` with one line for a person, naming (and
carrying, as ``reason``) the ``X-Rerank`` reason the proxy would give where there is one.
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from plugins.context import FeedContext, ItemsNotFound, RequestView
from plugins.run import PluginFailure
from proxy.feed.respond import is_json
from proxy.http import codec
from proxy.outcome.errors import Reason

if TYPE_CHECKING:
    from proxy.routing.snapshot import CompiledRoute

TIMEOUT_S = 5.0
MAX_BYTES = 8 * 1024 * 1024  # feed.max_body_bytes' default


class SampleError(Exception):
    """The feed could not be had, or would never be re-ranked; the message says why, and
    ``reason`` is the X-Rerank reason it names (None: the origin did not answer)."""

    @property
    def reason(self) -> str | None:
        found = re.search(r"\(reason=([a-z-]+)\)$", str(self))
        return found.group(1) if found else None


@dataclass(frozen=True)
class Sample:
    url: str
    status: int
    content_type: str
    size: int  # bytes as decoded
    elapsed_s: float
    doc: Any

    def describe(self) -> str:
        mime = self.content_type.split(";", 1)[0].strip()
        return f"{self.status} {mime}, {_size(self.size)} in {self.elapsed_s * 1000:.1f} ms"


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.1f} KB"


def join(origin: str, path: str) -> str:
    """The origin URL (with any base path) and a request path: ``origin + /api/feed``."""
    return origin.rstrip("/") + "/" + path.lstrip("/")


def fetch(
    url: str,
    headers: dict[str, str] | None = None,
    timeout_s: float = TIMEOUT_S,
    max_bytes: int = MAX_BYTES,
) -> Sample:
    """GET ``url`` and parse the body as the feed path would; SampleError if it cannot."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SampleError(f"{url}: not an http(s) URL")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout_s, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    sent = {
        "User-Agent": "rankgate",
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate, br",
        **(headers or {}),
    }
    origin = f"{parts.scheme}://{parts.netloc}"
    try:
        started = time.perf_counter()
        conn.request("GET", target, headers=sent)
        resp = conn.getresponse()
        body = resp.read(max_bytes + 1)
        elapsed = time.perf_counter() - started
    except TimeoutError:
        raise SampleError(f"{origin}: no answer within {timeout_s:g} s") from None
    except ConnectionRefusedError:
        raise SampleError(f"{origin}: unreachable: connection refused (is it running?)") from None
    except OSError as exc:
        raise SampleError(f"{origin}: unreachable: {exc.strerror or exc}") from None
    except http.client.HTTPException as exc:
        raise SampleError(f"{origin}: not an HTTP answer ({type(exc).__name__})") from None
    finally:
        conn.close()
    return judge(url, resp.status, resp.reason, resp.headers, body, elapsed, max_bytes)


def judge(
    url: str,
    status: int,
    reason: str,
    headers: Any,
    body: bytes,
    elapsed_s: float,
    max_bytes: int = MAX_BYTES,
) -> Sample:
    content_type = headers.get("Content-Type") or ""
    where = f"GET {url}"
    if status != 200:
        moved = headers.get("Location")
        to = f" (Location: {moved})" if moved else ""
        raise SampleError(
            f"{where} answered {status} {reason}{to}; rankgate re-ranks 200 answers only "
            "(reason=status)"
        )
    if not is_json(content_type):
        raise SampleError(
            f"{where} answered Content-Type {content_type or '(none)'}; rankgate re-ranks "
            "JSON only: application/json or +json (reason=not-json)"
        )
    if len(body) > max_bytes:
        raise SampleError(
            f"{where}: body over {_size(max_bytes)}, passed through untouched (reason=too-large)"
        )
    encoding = codec.normalize(headers.get("Content-Encoding"))
    try:
        data = codec.decode(body, encoding, max_bytes)
    except codec.CodecError as exc:
        raise SampleError(f"{where}: {exc} (reason=encoding)") from None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SampleError(f"{where}: the body is not JSON: {exc} (reason=bad-json)") from None
    return Sample(url, status, content_type, len(data), elapsed_s, doc)


# -- one route against its sample page --------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What a route would do with its sample page: re-rank (``reason`` None), never
    (``reason``: what every request would say in X-Rerank), or not known (``probed``
    False: no sample page, or the origin did not answer)."""

    reason: str | None
    detail: str
    probed: bool = True

    @property
    def never(self) -> bool:
        return self.probed and self.reason is not None


def verdict(route: CompiledRoute, doc: Any) -> Verdict:
    """The items and ids the route finds in a parsed page, as the feed path finds them
    (its items plugin, the built-in dotted one for ``items:``/``item_id:``)."""
    spec = route.spec
    shown = spec.items or '""'
    where = f"items: {shown}" if route.plugins.dotted is not None else "its items plugin"
    ctx = FeedContext(None, RequestView({}, {}, {}), route.name, {}, doc=doc)
    try:
        arrays = route.plugins.find_items(ctx)
    except ItemsNotFound:
        return Verdict(Reason.ITEMS_NOT_FOUND.value, f"no array at {where} in the sample page")
    except PluginFailure as exc:
        return Verdict(Reason.PLUGIN_ERROR.value, f"{where} failed on the sample page: {exc}")
    ids = [i for arr in arrays for i in arr.ids]
    have = sum(1 for i in ids if i is not None)
    if not ids:
        return Verdict(Reason.NO_ITEMS.value, f"the array at {where} is empty in the sample page")
    if have == 0:
        return Verdict(
            Reason.NO_ITEM_IDS.value,
            f"{len(ids)} items at {where}, none with an id at {spec.item_id}",
        )
    return Verdict(None, f"{len(ids)} items at {where}, {have} with an id")


def probe_route(
    route: CompiledRoute, origin: str, timeout_s: float = TIMEOUT_S, max_bytes: int = MAX_BYTES
) -> Verdict:
    """GET the route's sample page (``sample:``, else its exact match path) from the
    origin and judge it as the feed path would."""
    sample = route.spec.sample_path
    if sample is None:
        return Verdict(None, "no sample page: its match is not one exact path", probed=False)
    try:
        got = fetch(join(origin, sample), timeout_s=timeout_s, max_bytes=max_bytes)
    except SampleError as exc:
        return Verdict(exc.reason, str(exc), probed=exc.reason is not None)
    found = verdict(route, got.doc)
    return Verdict(found.reason, f"GET {sample}: {found.detail}", found.probed)
