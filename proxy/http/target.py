"""Request targets (RFC 9112 3.2): what rankgate sends upstream for each form.

- origin-form ``/path?query``: as the client encoded it, byte for byte;
- absolute-form ``http://host/path?query`` (which a server must accept): its path and
  query only. rankgate forwards to its origin and nowhere else, so the host named is
  never contacted (no SSRF); it only becomes the request's Host, as RFC 9112 3.2.2 says;
- authority-form ``host:port`` (CONNECT): refused with 405, rankgate opens no tunnels;
- asterisk-form ``*``: ``OPTIONS *`` answered 200 here (aiohttp's client cannot send
  it on), any other method 400.
"""

from __future__ import annotations

from aiohttp import web

from proxy.outcome.ending import Answered
from proxy.outcome.errors import Reason

# Every method is forwarded but CONNECT; a 405 must say which are allowed.
ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
SCHEMES = frozenset({"http", "https"})


def upstream_target(request: web.BaseRequest) -> str:
    """The path and query to request from the origin; raises Answered otherwise."""
    raw = request.raw_path
    method = request.method
    if raw[:1] == "/" and method != "CONNECT":
        return raw
    if method == "CONNECT":
        raise Answered(
            405,
            Reason.CONNECT,
            "rankgate is a reverse proxy and opens no tunnels (CONNECT)",
            {"Allow": ALLOW},
            close=True,  # the parser reads what follows a CONNECT as tunnel bytes
        )
    if raw == "*":
        if method == "OPTIONS":
            raise Answered(
                200, Reason.OPTIONS_ASTERISK, "OPTIONS * answered by rankgate", body=False
            )
        raise Answered(400, Reason.BAD_TARGET, "'*' is a target for OPTIONS only", close=True)
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise Answered(
            400,
            Reason.BAD_TARGET,
            "the request target must be a path or an http(s) URL",
            close=True,
        )
    # The path starts at the first "/" or "?" after the authority; none: "/".
    cut = len(rest)
    for mark in ("/", "?"):
        at = rest.find(mark)
        if 0 <= at < cut:
            cut = at
    tail = rest[cut:]
    if not tail:
        return "/"
    return tail if tail[0] == "/" else "/" + tail
