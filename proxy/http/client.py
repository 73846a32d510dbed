"""aiohttp's client request to the origin, with its per-request header steps made cheap.

For every request aiohttp's ``ClientRequest`` copies the headers it is given into a new
multidict one ``add`` at a time (watching for ``Host``), then builds a multidict of the
session's ``skip_auto_headers`` (sorted) and a second copy of the headers to look up
which defaults to add. The forwarder's session always skips the same names, and its
headers come as a multidict without ``Host`` unless ``origin.host_header`` sets one: here
the copy is one ``extend`` and the skip list is built once. The headers sent are the
same, in the same order (tests/unit/http/test_client.py checks them against aiohttp's).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiohttp
from aiohttp import hdrs
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict, CIMultiDictProxy


class OriginRequest(aiohttp.ClientRequest):
    # A session's skip set (a frozenset, made once per session) -> its multidict.
    _skips: dict[frozenset[Any], CIMultiDictProxy[None]] = {}

    def update_headers(self, headers: Any) -> None:
        if not isinstance(headers, CIMultiDict) or hdrs.HOST in headers:
            super().update_headers(headers)
            return
        host = self.url.host_port_subcomponent
        assert host is not None  # an absolute URL: the forwarder makes it
        out: CIMultiDict[str] = CIMultiDict(((hdrs.HOST, host),))
        out.extend(headers)
        self.headers = out

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        if not isinstance(skip_auto_headers, frozenset):
            super().update_auto_headers(skip_auto_headers)
            return
        skip = self._skips.get(skip_auto_headers)
        if skip is None:
            skip = CIMultiDictProxy(CIMultiDict((h, None) for h in sorted(skip_auto_headers)))
            if len(self._skips) < 16:  # one per session: a few at most
                self._skips[skip_auto_headers] = skip
        # aiohttp only reads it (Content-Type and a payload's headers are looked up in it).
        self._skip_auto_headers = skip  # type: ignore[assignment]
        headers = self.headers
        for name, value in self.DEFAULT_HEADERS.items():
            if name not in headers and name not in skip:
                headers[name] = value
        if hdrs.USER_AGENT not in headers and hdrs.USER_AGENT not in skip:
            headers[hdrs.USER_AGENT] = SERVER_SOFTWARE
