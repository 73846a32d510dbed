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


# Names a filter remembers its verdict for: clients choose header names, so the memo
# is bounded; past it, a name is judged each time.
MAX_MEMO_NAMES = 512
_DROP, _KEEP, _NOTE = 0, 1, 2


class HeaderFilter:
    """``end_to_end`` for a set of dropped names fixed once (a caller's, the response's),
    made cheap for the usual message: each header name's verdict is remembered as it
    was spelled (a dict lookup per header, not a lower-casing, a set and a prefix
    test; lookups in a case-insensitive multidict cost more still). A message with a
    noted name (``Connection``, whose list drops more, and the caller's ``note``: names
    it would replace or append to) is given to the caller to do in full."""

    __slots__ = ("_verdicts", "drop", "note", "skip")

    def __init__(self, drop: Iterable[str] = (), note: Iterable[str] = ()) -> None:
        self.drop = tuple(drop)
        self.skip = HOP_BY_HOP | {d.lower() for d in self.drop}
        self.note = frozenset({"connection", *(n.lower() for n in note)})
        self._verdicts: dict[str, int] = {}

    def _judge(self, name: str) -> int:
        lname = name.lower()
        if lname in self.note:
            verdict = _NOTE
        elif lname in self.skip or lname.startswith("proxy-"):
            verdict = _DROP
        else:
            verdict = _KEEP
        if len(self._verdicts) < MAX_MEMO_NAMES:
            self._verdicts[name] = verdict
        return verdict

    def pairs(
        self, headers: CIMultiDictProxy[str] | CIMultiDict[str]
    ) -> list[tuple[str, str]] | None:
        """The kept (name, value) pairs in order; None when a noted name is there."""
        verdicts = self._verdicts
        out = []
        for name, value in headers.items():
            verdict = verdicts.get(name)
            if verdict is None:
                verdict = self._judge(name)
            if verdict == _KEEP:
                out.append((name, value))
            elif verdict:
                return None
        return out

    def copy(
        self, headers: CIMultiDictProxy[str] | CIMultiDict[str]
    ) -> list[tuple[str, str]] | CIMultiDict[str]:
        """The end-to-end headers: ``pairs``, else ``end_to_end`` (a Connection header)."""
        kept = self.pairs(headers)
        return end_to_end(headers, self.drop) if kept is None else kept


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
