"""The built-in user plugin's sources (what a route's user: compiles into): first
present wins, bounded, trimmed."""

from __future__ import annotations

from plugins.builtin.sources import resolve_user
from plugins.context import MAX_USER_ID, RequestView

SOURCES = (("cookie", "uid"), ("header", "X-User-Id"), ("query", "u"))


def view(
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> RequestView:
    return RequestView(headers or {}, cookies or {}, query or {})


def test_first_present_source_wins() -> None:
    assert resolve_user(SOURCES, view({"X-User-Id": "h"}, {"uid": "c"}, {"u": "q"})) == "c"
    assert resolve_user(SOURCES, view({"X-User-Id": "h"}, {}, {"u": "q"})) == "h"
    assert resolve_user(SOURCES, view(query={"u": "q"})) == "q"
    assert resolve_user(SOURCES, view()) is None


def test_blank_and_overlong_values_are_not_ids() -> None:
    assert resolve_user(SOURCES, view({"X-User-Id": "  h  "}, {"uid": "   "})) == "h"
    too_long = "x" * (MAX_USER_ID + 1)
    assert resolve_user(SOURCES, view(cookies={"uid": too_long}, query={"u": "q"})) == "q"
