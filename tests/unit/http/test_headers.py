"""Proxy header rules: hop-by-hop removal (and what Connection names), forwarding
headers appended, tokens merged into Vary without duplicates."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.http.headers import (
    MAX_MEMO_NAMES,
    VIA,
    HeaderFilter,
    add_forwarded,
    append_token,
    end_to_end,
)


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


def test_header_filter_keeps_what_end_to_end_keeps() -> None:
    cases = [
        [("Host", "h"), ("X-A", "1"), ("x-a", "2"), ("TE", "trailers"), ("Proxy-X", "p")],
        [("Keep-Alive", "5"), ("Set-Cookie", "a=1"), ("ETag", '"e"'), ("Set-Cookie", "b")],
        [("Connection", "X-Secret"), ("X-Secret", "gone"), ("X-Kept", "here")],
        [],
    ]
    filters = [HeaderFilter(), HeaderFilter(("Host", "ETag"))]
    for _ in range(2):  # judged, then remembered
        for headers in map(CIMultiDict, cases):
            for f in filters:
                kept = list(CIMultiDict(f.copy(headers)).items())
                assert kept == list(end_to_end(headers, f.drop).items())
                assert (f.pairs(headers) is None) == ("Connection" in headers)


def test_header_filter_notes_names_and_bounds_its_memo() -> None:
    f = HeaderFilter(("Host",), note=("Via",))
    assert f.pairs(CIMultiDict([("X-A", "1"), ("VIA", "1.0 cdn")])) is None
    assert f.pairs(CIMultiDict([("X-A", "1"), ("Host", "h")])) == [("X-A", "1")]
    many = CIMultiDict((f"X-{k}", "v") for k in range(2 * MAX_MEMO_NAMES))
    assert f.pairs(many) == list(many.items())
    assert len(f._verdicts) == MAX_MEMO_NAMES


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
