"""Header rules for a proxy: hop-by-hop removal and forwarding headers (RFC 9110 7.6)."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

VIA = "1.1 rankgate"
# An operator's request for the explanation of a feed response (its value: admin.token);
# ours alone, never forwarded (proxy/feed/explanation.py).
EXPLAIN_HEADER = "X-Rankgate-Explain"


def connection_listed(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    listed: set[str] = set()
    for value in headers.getall("Connection", ()):
        listed.update(token.strip().lower() for token in value.split(",") if token.strip())
    return listed


def end_to_end(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], drop: Iterable[str] = ()
) -> CIMultiDict[str]:
    """A copy of ``headers`` without hop-by-hop ones (and those Connection names)."""
    skip = HOP_BY_HOP | connection_listed(headers) | {d.lower() for d in drop}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lname = name.lower()
        if lname in skip or lname.startswith("proxy-"):
            continue
        out.add(name, value)
    return out


def add_forwarded(
    headers: CIMultiDict[str], peer: str | None, scheme: str, host: str | None
) -> None:
    """Append to X-Forwarded-For and set X-Forwarded-Proto/Host and Via."""
    if peer:
        prior = headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = scheme
    if host:
        headers["X-Forwarded-Host"] = host
    prior_via = headers.get("Via")
    headers["Via"] = f"{prior_via}, {VIA}" if prior_via else VIA


def append_token(headers: CIMultiDict[str], name: str, tokens: Iterable[str]) -> None:
    """Merge comma-separated tokens into a header (e.g. Vary), case-insensitively unique."""
    current = [t.strip() for v in headers.getall(name, ()) for t in v.split(",") if t.strip()]
    seen = {t.lower() for t in current}
    for token in tokens:
        if token.lower() not in seen:
            current.append(token)
            seen.add(token.lower())
    if current:
        headers[name] = ", ".join(current)
