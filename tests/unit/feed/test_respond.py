"""The feed response's headers: JSON detection, per-user Cache-Control, Server-Timing."""

from __future__ import annotations

from proxy.feed.respond import is_json, private_cache_control, server_timing


def test_is_json() -> None:
    assert is_json("application/json; charset=utf-8")
    assert is_json("application/vnd.api+json")
    assert not is_json("text/html")
    assert not is_json(None)


def test_private_cache_control_keeps_lifetimes() -> None:
    assert private_cache_control(None) == "private"
    assert private_cache_control("public, max-age=60, s-maxage=600") == "private, max-age=60"


def test_server_timing_follows_the_origins_and_names_stages() -> None:
    timings = {"origin": 0.0012, "inference": 0.00005, "plugin:pin": 0.00002}
    assert server_timing(timings) == "origin;dur=1.20, infer;dur=0.05, plugin-pin;dur=0.02"
    assert server_timing({"total": 0.001}, "cdn;dur=3") == "cdn;dur=3, total;dur=1.00"
