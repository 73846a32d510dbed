"""One GET of a feed from the origin, judged as the feed path would judge it: a 200, a
JSON content type, a body under the size limit that decodes and parses. Used by
``rankgate init`` (to see the feed) and ``rankgate check`` (to probe a route).

Every way it can fail is a ``SampleError`` with one line for a person, naming the
``X-Rerank`` reason the proxy would give where there is one.
"""

from __future__ import annotations

import http.client
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from proxy.feed.respond import is_json
from proxy.http import codec

TIMEOUT_S = 5.0
MAX_BYTES = 8 * 1024 * 1024  # feed.max_body_bytes' default


class SampleError(Exception):
    """The feed could not be had, or would never be re-ranked; the message says why."""


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
