"""The files ``rankgate init`` writes: what they say loads back through rankgate's own
config models, values that need quoting survive, the comments line up, and a flag that
would make a bad file is refused with the file and YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.routes import RoutesFile
from proxy.config.settings import Settings
from proxy.config.yamlload import parse_yaml, validate
from proxy.preflight.initfiles import render_config, render_routes, validate_files
from proxy.preflight.initprobe import Found, InitError, ModelChoice, choose_model
from tests.support.common import dot_model

FOUND = Found("data.posts", "pid", 12, 12)


def files(
    tmp_path: Path, model: ModelChoice, feed: str = "/api/feed", user: tuple[str, ...] = ()
) -> tuple[str, str]:
    config = render_config("http://127.0.0.1:9000", ("0.0.0.0", 8081), ("127.0.0.1", 9091), model)
    routes = render_routes(feed, FOUND, model, list(user or ["cookie:uid"]), tmp_path)
    return config, routes


def test_the_files_load_as_serve_reads_them(tmp_path: Path) -> None:
    model = choose_model(None, None, tmp_path)
    config_text, routes_text = files(tmp_path, model, user=("cookie:uid", "header:X-User"))
    validate_files(config_text, routes_text, tmp_path)
    config = parse_yaml(config_text, "rankgate.yaml")
    settings = validate(Settings, {**config, "base_dir": tmp_path}, "rankgate.yaml")
    assert (settings.listen.host, settings.listen.port) == ("0.0.0.0", 8081)
    assert (settings.admin.host, settings.admin.port) == ("127.0.0.1", 9091)
    assert str(settings.origin.url).startswith("http://127.0.0.1:9000")
    assert settings.redis.url is None and settings.embeddings.dim == 32
    routes = validate(RoutesFile, parse_yaml(routes_text, "routes.yaml"), "routes.yaml")
    (route,) = routes.routes
    assert (route.name, route.match.path, route.sample) == ("feed", "/api/feed", "/api/feed")
    assert (route.items, route.item_id, route.model) == ("data.posts", "pid", "ranker_v1")
    assert route.user == ("cookie:uid", "header:X-User")
    assert routes.models["ranker_v1"].sha256 == model.sha256
    assert 'path: "ranker_v1.onnx"' in routes_text  # the copy beside the config


def test_comments_line_up_in_one_column(tmp_path: Path) -> None:
    for text in files(tmp_path, choose_model(None, None, tmp_path)):
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        noted = [line for line in lines if "  # " in line]
        assert len(noted) >= 5
        assert len({line.index("  # ") for line in noted}) == 1, noted


def test_values_that_need_quoting_survive(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    model = dot_model(tmp_path / "elsewhere" / 'a "b".onnx', dim=8)
    choice = choose_model(str(model), None, tmp_path / "conf")
    feed = '/api/feeds/?q="x: #1"&b=[2]'
    _, routes_text = files(tmp_path / "conf", choice, feed=feed)
    route = validate(RoutesFile, parse_yaml(routes_text, "routes.yaml"), "routes.yaml").routes[0]
    # The route matches the path (queries are ignored) and is named for its last segment.
    assert (route.match.path, route.sample, route.name) == ("/api/feeds/", feed, "feeds")
    path = parse_yaml(routes_text, "routes.yaml")["models"]["a-b"]["path"]
    assert path == model.resolve().as_posix()  # outside the config's tree: absolute
    _, root = files(tmp_path / "conf", choice, feed="/")
    assert "  - name: feed" in root


def test_a_bad_flag_is_refused_with_the_file_and_path(tmp_path: Path) -> None:
    model = choose_model(None, None, tmp_path)
    config_text, routes_text = files(tmp_path, model, user=("bogus:x",))
    with pytest.raises(InitError) as info:
        validate_files(config_text, routes_text, tmp_path)
    assert str(info.value).startswith("routes.yaml: routes[0].user: 'bogus:x': want")
    config_text = render_config("http://127.0.0.1:9000", ("h", 70000), ("h", 1), model)
    with pytest.raises(InitError, match=r"^rankgate\.yaml: listen\.port: Input should be less"):
        validate_files(config_text, routes_text, tmp_path)
