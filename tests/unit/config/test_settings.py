"""Static config validation: every problem names its YAML path; ``rankgate serve`` with
a bad file exits with status 2 and a message, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config.settings import load_settings
from proxy.config.yamlload import ConfigError
from tests.support.common import dot_model, write_config

GOOD = """\
listen: {host: 127.0.0.1, port: 0}
admin: {host: 127.0.0.1, port: 0}
origin: {url: "http://127.0.0.1:9"}
"""
ROUTES = """\
models:
  dot: {path: dot.onnx}
routes:
  - {name: feed, match: {path: /feed}, model: dot}
"""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            GOOD.replace("port: 0}", "prot: 0}", 1),
            "listen.prot: unknown key (did you mean 'port'?)",
        ),
        (GOOD + "loging: {}\n", "loging: unknown key (did you mean 'logging'?)"),
        (GOOD + "redis: {embeded: {}}\n", "redis.embeded: unknown key (did you mean 'embedded'?)"),
        (
            GOOD + "embeddings: {item_cache: {max_item: 1}}\n",
            "embeddings.item_cache.max_item: unknown key (did you mean 'max_items'?)",
        ),
        (GOOD + "zzz: 1\n", "zzz: unknown key\n"),  # nothing close: no suggestion
        (GOOD + "base_di: 1\n", "base_di: unknown key\n"),  # never the loader's own field
        ("listen: {port: 1}\n", "origin: required"),
        (GOOD.replace("http://127.0.0.1:9", "127.0.0.1:9"), "origin.url: not a URL"),
        (
            GOOD.replace("port: 0}\nadmin", "port: 8080}\nadmin").replace(
                "admin: {host: 127.0.0.1, port: 0}", "admin: {host: 127.0.0.1, port: 8080}"
            ),
            "admin.port: must differ from listen.port",
        ),
        (GOOD + "logging: {format: xml}\n", "logging.format: Input should be 'json' or 'text'"),
        (GOOD + "logging: {level: loud}\n", "logging.level: Input should be"),
        (GOOD + "workers: -1\n", "workers: Input should be greater than or equal to 0"),
        (GOOD + "shutdown_timeout_s: soon\n", "shutdown_timeout_s: Input should be a valid"),
        (GOOD + "redis: {url: 'http://x'}\n", "redis.url: not a Redis URL"),
        (GOOD + "embeddings: {user_key: 'u:'}\n", "embeddings.user_key: must contain '{id}'"),
        (GOOD + "base_dir: /etc\n", "base_dir: unknown key"),
        (
            GOOD.replace("port: 0}", "port: 0, send_timeout_s: 0}", 1),
            "listen.send_timeout_s: Input should be greater than 0",
        ),
        (
            GOOD.replace('9"}', '9", pool_timeout_s: -1}'),
            "origin.pool_timeout_s: Input should be greater than 0",
        ),
        (
            GOOD + "embeddings: {item_cache: {max_bytes: -1}}\n",
            "embeddings.item_cache.max_bytes: Input should be greater than or equal to 0",
        ),
        ("- a\n- b\n", "(top level): must be a mapping"),
        (GOOD + "listen: {host: [\n", "YAML syntax error: line"),
    ],
)
def test_problems_name_the_yaml_path(tmp_path: Path, text: str, problem: str) -> None:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    rendered = info.value.render() + "\n"
    assert rendered.startswith(f"{cfg}: ")
    assert problem in rendered, rendered


def test_routes_unknown_keys_get_a_suggestion(tmp_path: Path) -> None:
    from proxy.config.routes import RoutesFile
    from proxy.config.yamlload import load

    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "models:\n  a: {path: a.onnx, sha: x}\n"
        "routes:\n  - {name: f, match: {pth: /x}, model: a, item: x,\n"
        "     experiments: [{when: {headr: {a: b}}, model: a}]}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(RoutesFile, routes)
    assert info.value.problems == [
        "models.a.sha: unknown key (did you mean 'sha256'?)",
        "routes[0].match.pth: unknown key (did you mean 'path'?)",
        "routes[0].experiments[0].when.headr: unknown key (did you mean 'header'?)",
        "routes[0].item: unknown key (did you mean 'items'?)",
    ]


def test_serve_help_shows_the_default_config(capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli.main import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: ./rankgate.yaml when there is one)" in out


def test_good_config_and_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text(GOOD)
    s = load_settings(cfg)
    assert s.workers == 0 and s.logging.format == "json" and s.logging.access_log
    assert s.admin.readyz_requires_redis is False and s.shutdown_timeout_s == 15
    assert s.routes_path == tmp_path / "routes.yaml"


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_clean_exit_2(out: subprocess.CompletedProcess[str], message: str) -> None:
    assert out.returncode == 2, out.stderr
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout


def test_serve_bad_static_config(tmp_path: Path) -> None:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text(GOOD + "logging: {format: xml, acces_log: false}\n")
    out = serve("--config", str(cfg))
    assert_clean_exit_2(out, f"{cfg}: logging.format: Input should be 'json' or 'text'")
    assert f"{cfg}: logging.acces_log: unknown key" in out.stderr
    assert_clean_exit_2(serve("--config", str(tmp_path / "none.yaml")), "file not found")


def test_serve_bad_routes_file(tmp_path: Path, redis_url: str) -> None:
    dot_model(tmp_path / "dot.onnx")
    routes = ROUTES.replace("model: dot}", "model: dto}")
    cfg = write_config(tmp_path, "http://127.0.0.1:9", redis_url, routes)
    assert_clean_exit_2(serve("--config", str(cfg)), "routes[0].model: unknown model 'dto'")
    # With workers, the supervisor gives up too when no worker could ever start.
    assert_clean_exit_2(
        serve("--config", str(cfg), "--workers", "2"), "routes[0].model: unknown model 'dto'"
    )


def test_serve_port_in_use(tmp_path: Path, redis_url: str) -> None:
    dot_model(tmp_path / "dot.onnx")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(tmp_path, "http://127.0.0.1:9", redis_url, ROUTES)
        text = cfg.read_text().replace("port: 0}", f"port: {port}}}", 1)
        cfg.write_text(text)
        assert_clean_exit_2(
            serve("--config", str(cfg)), f"listen: cannot listen on 127.0.0.1:{port}"
        )


def test_serve_bad_workers_flag(tmp_path: Path) -> None:
    out = serve("--config", str(tmp_path / "x.yaml"), "--workers", "many")
    assert out.returncode == 2 and "want a number >= 0" in out.stderr


def test_the_default_config_is_inits_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxy.cli.options import NoConfig, config_path, optional_config

    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoConfig, match=r"rankgate check: no config: pass --config FILE"):
        config_path(None, "check")
    assert optional_config(None) is None
    (tmp_path / "rankgate.yaml").write_text(GOOD)  # what `rankgate init` writes here
    assert config_path(None, "check") == "rankgate.yaml"
    assert config_path("other.yaml", "check") == "other.yaml"


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["check"],
        ["experiments", "report"],
        ["routes", "status"],
        ["edge", "build", "-o", "x"],
    ],
)
def test_every_command_without_a_config_names_the_flag(
    tmp_path: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule for all: no --config and no ./rankgate.yaml is exit 2 naming --config."""
    monkeypatch.chdir(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "proxy", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "no config: pass --config FILE" in done.stderr


def test_reference_config_block_validates_and_states_the_defaults() -> None:
    """docs/reference/configuration.md's rankgate.yaml is a valid file whose limits are the
    defaults."""
    import re

    import yaml

    from proxy.config.settings import Settings

    page = Path(__file__).resolve().parents[3] / "docs" / "reference" / "configuration.md"
    block = re.search(r"```yaml file=config/rankgate.yaml\n(.*?)```", page.read_text(), re.S)
    assert block, "docs/reference/configuration.md lost its rankgate.yaml block"
    data = yaml.safe_load(block.group(1))
    settings = Settings.model_validate(data)
    defaults = Settings.model_validate({"origin": {"url": data["origin"]["url"]}})
    for section in ("listen", "origin"):
        for key, value in data[section].items():
            assert getattr(getattr(defaults, section), key) == value, f"{section}.{key}"
    for key, value in data["embeddings"]["item_cache"].items():
        assert getattr(defaults.embeddings.item_cache, key) == value, f"item_cache.{key}"
    assert settings.listen.max_connections <= settings.origin.max_connections
