"""Resolving the user id of a request from its ordered sources (first present wins)."""

from __future__ import annotations

from proxy.experiments import RequestView

MAX_USER_ID = 256  # longer values are not ids; they would only bloat Redis keys


def resolve_user(sources: tuple[tuple[str, str], ...], view: RequestView) -> str | None:
    for kind, name in sources:
        if kind == "cookie":
            value = view.cookies.get(name)
        elif kind == "header":
            value = view.headers.get(name)
        else:
            value = view.query.get(name)
        if value:
            value = value.strip()
            if value and len(value) <= MAX_USER_ID:
                return value
    return None
