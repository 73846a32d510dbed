"""Proxy header rules: hop-by-hop removal (and what Connection names), forwarding
headers appended, tokens merged into Vary without duplicates."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.http.headers import VIA, add_forwarded, append_token, end_to_end


def test_end_to_end_drops_hop_by_hop_and_what_connection_names() -> None:
    headers = CIMultiDict(
        [
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authorization", "Basic x"),
            ("Proxy-Foo", "1"),
            ("X-Secret-Hop", "gone"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Host", "example"),
        ]
    )
    out = end_to_end(headers, drop=("host",))
    assert list(out.items()) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    assert "Host" in headers  # the input is not changed


def test_add_forwarded_appends_to_what_came() -> None:
    headers: CIMultiDict[str] = CIMultiDict({"X-Forwarded-For": "1.1.1.1", "Via": "1.0 cdn"})
    add_forwarded(headers, "10.0.0.7", "https", "shop.example")
    assert headers["X-Forwarded-For"] == "1.1.1.1, 10.0.0.7"
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-Host"] == "shop.example"
    assert headers["Via"] == f"1.0 cdn, {VIA}"
    fresh: CIMultiDict[str] = CIMultiDict()
    add_forwarded(fresh, None, "http", None)
    assert "X-Forwarded-For" not in fresh and "X-Forwarded-Host" not in fresh
    assert fresh["Via"] == VIA


def test_append_token_merges_case_insensitively() -> None:
    headers: CIMultiDict[str] = CIMultiDict([("Vary", "accept-encoding"), ("Vary", "Cookie")])
    append_token(headers, "Vary", ["Cookie", "Accept-Encoding", "X-User-Id", "x-user-id"])
    assert headers.getall("Vary") == ["accept-encoding, Cookie, X-User-Id"]
    empty: CIMultiDict[str] = CIMultiDict()
    append_token(empty, "Vary", [])
    assert "Vary" not in empty
