"""proxy/edge/config.py: routes.yaml compiled for the edge Worker, and what it refuses."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from proxy.config import yamlload
from proxy.config.routes import RoutesFile
from proxy.config.settings import load_settings
from proxy.edge.config import EdgeCompile, compile_edge


def compile_routes(tmp_path: Path, routes: str, extra: str = "") -> EdgeCompile:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text(
        textwrap.dedent(
            """\
            origin: {url: "http://127.0.0.1:9000"}
            embeddings: {dim: 8, user_key: "u:{id}", item_key: "i:{id}"}
            feed: {max_body_bytes: 4096}
            """
        )
        + textwrap.dedent(extra)
    )
    spec = yamlload.validate(RoutesFile, yamlload.parse_yaml(textwrap.dedent(routes), "r"), "r")
    return compile_edge(load_settings(cfg), spec, {"routes": "routes.yaml"})


MODELS = """\
models:
  a: {path: a.onnx}
  b: {path: b.onnx}
  unused: {path: c.onnx}
"""


def test_route_settings_arms_and_salts(tmp_path: Path) -> None:
    out = compile_routes(
        tmp_path,
        MODELS
        + """\
routes:
  - name: home
    match: {path: /api/feed, methods: [get, HEAD]}
    items: data.items
    item_id: meta.id
    user: [cookie:uid, header:X-User-Id, query:u]
    budget_ms: 30
    model: a
    experiments:
      - {name: beta, when: {header: {X-Beta: true}, cookie: {b: 1}}, model: b}
      - {when: {percent: 12.5}, model: b}
      - {name: fixed, when: {percent: 5, salt: spring}, model: none}
""",
    )
    assert out.problems == []
    (route,) = out.config["routes"]
    assert route["match"] == {"exact": "/api/feed"}
    assert route["methods"] == ["GET", "HEAD"]
    assert route["items"] == ["data", "items"] and route["item_id"] == ["meta", "id"]
    assert route["user"] == [["cookie", "uid"], ["header", "X-User-Id"], ["query", "u"]]
    assert route["default"] == {"arm": "default", "model": "a"}
    beta, pct, fixed = route["experiments"]
    # YAML's true and 1 are the text a request carries
    assert beta == {
        "arm": "beta",
        "model": "b",
        "header": {"X-Beta": "true"},
        "cookie": {"b": "1"},
        "query": None,
        "percent": None,
        "salt": None,
    }
    assert (pct["arm"], pct["salt"], pct["percent"]) == ("exp1", "home:exp1", 12.5)
    assert (fixed["model"], fixed["salt"]) == ("none", "spring")
    # what can choose the body, once each: sources, then the experiments' headers
    assert route["vary"] == ["Cookie", "X-User-Id", "X-Beta"]
    # only the models the routes name are bundled
    assert out.models == {"a": "models/a.onnx", "b": "models/b.onnx"}
    assert out.config["embeddings"]["user_key"] == "u:{id}"
    assert out.config["feed"] == {"max_body_bytes": 4096}


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ('{path: "/u/{id}/feed"}', {"segments": ["/u/", "/feed"]}),
        ('{path: "/a/{x}/{y}"}', {"segments": ["/a/", "/", ""]}),
        ('{path: "/a/{1x}"}', {"exact": "/a/{1x}"}),  # not a {name}: literal, as the proxy
        ("{prefix: /api/feeds/}", {"prefix": "/api/feeds/"}),
    ],
)
def test_path_kinds(tmp_path: Path, match: str, expected: dict[str, Any]) -> None:
    out = compile_routes(tmp_path, MODELS + f"routes:\n  - {{name: r, match: {match}, model: a}}\n")
    assert out.config["routes"][0]["match"] == expected


def test_edge_rules_and_plugins_that_compile_to_settings(tmp_path: Path) -> None:
    out = compile_routes(
        tmp_path,
        MODELS
        + """\
routes:
  - name: r
    match: {path: /f}
    model: a
    plugins:
      - {use: sources, from: [header:X-Auth-User, query:u, cookie:anon]}
      - {use: dotted, items: data.children, item_id: data.id}
      - {use: pin, field: sponsored}
      - {use: pin, field: kind, in: [ad, 1, true, null]}
      - {use: filter, field: status, equals: null}
      - {use: boost, field: stats.ctr, weight: 2, missing: -1}
      - {use: annotate, field: s, round: 2}
""",
    )
    assert out.problems == []
    route = out.config["routes"][0]
    assert route["user"] == [["header", "X-Auth-User"], ["query", "u"], ["cookie", "anon"]]
    assert route["vary"] == ["X-Auth-User", "Cookie"]  # a query is part of the URL
    assert route["items"] == ["data", "children"] and route["item_id"] == ["data", "id"]
    assert route["rules"] == [
        {"use": "pin", "field": ["sponsored"], "values": None},
        {"use": "pin", "field": ["kind"], "values": ["ad", 1, True, None]},
        {"use": "filter", "field": ["status"], "values": [None]},
        {"use": "boost", "field": ["stats", "ctr"], "weight": 2.0, "missing": -1.0},
        {"use": "annotate", "key": "s", "round": 2},
    ]


def test_annotate_defaults(tmp_path: Path) -> None:
    routes = (
        MODELS + "routes:\n  - {name: r, match: {path: /f}, model: a, plugins: [{use: annotate}]}\n"
    )
    rule = compile_routes(tmp_path, routes).config["routes"][0]["rules"][0]
    assert rule == {"use": "annotate", "key": "_score", "round": 4}


def test_what_the_edge_cannot_honour_is_named_by_path(tmp_path: Path) -> None:
    out = compile_routes(
        tmp_path,
        MODELS
        + """\
routes:
  - {name: ok, match: {path: /ok}, model: a}
  - name: r
    match: {path: /f}
    model: a
    plugins:
      - {use: diversify, lambda: 0.5}
      - {use: filter, field: status, redis_set: "seen:{user}"}
      - {use: filter, cookie: seen}
      - {use: "plugins.examples:FavoriteCategories"}
""",
    )
    assert out.problems == [
        "routes[1].plugins[0].use: plugin 'diversify' cannot run at the edge (the Worker runs "
        "pin, filter, boost, annotate, sources, dotted; other plugins are Python code)",
        "routes[1].plugins[1].redis_set: cannot run at the edge (a Redis set filter needs the "
        "proxy's Redis)",
        "routes[1].plugins[2].cookie: cannot run at the edge (a cookie filter is not "
        "implemented at the edge)",
        "routes[1].plugins[3].use: plugin 'plugins.examples:FavoriteCategories' cannot run at "
        "the edge (the Worker runs pin, filter, boost, annotate, sources, dotted; other "
        "plugins are Python code)",
    ]


def test_host_header_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text('origin: {url: "http://127.0.0.1:9000", host_header: preserve}\n')
    spec = yamlload.validate(RoutesFile, {}, "r")
    out = compile_edge(load_settings(cfg), spec, {})
    assert out.problems == []
    assert out.settings_problems == [
        "origin.host_header: cannot be honoured at the edge (a Worker's subrequest carries "
        "its URL's host); remove it to build"
    ]


def test_guardrails_and_bandits_are_named_by_path(tmp_path: Path) -> None:
    out = compile_routes(
        tmp_path,
        MODELS
        + """\
routes:
  - name: r
    match: {path: /f}
    model: a
    guardrails: {ctr: -10%}
    experiments:
      - {name: g, when: {percent: 10}, model: a, guardrails: {not_applied: +5pp}}
      - {name: b, when: {percent: 10}, bandit: {models: [a, b]}}
""",
    )
    assert out.problems == [
        "routes[0].guardrails: does not run at the edge; remove it",
        "routes[0].experiments[0].guardrails: does not run at the edge; remove it",
        "routes[0].experiments[1].bandit: does not run at the edge; remove it",
    ]


def test_interleaved_and_multileaved_arms_are_refused_by_path(tmp_path: Path) -> None:
    out = compile_routes(
        tmp_path,
        MODELS
        + """\
routes:
  - name: r
    match: {path: /f}
    model: a
    experiments:
      - {name: two, when: {percent: 10}, interleave: [a, b]}
      - {name: three, when: {percent: 10}, interleave: [a, b, unused]}
""",
    )
    assert out.problems == [
        f"routes[0].experiments[{k}].interleave: interleaved arms do not run at the edge; "
        "remove it to build"
        for k in (0, 1)
    ]
