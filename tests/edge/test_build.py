"""`rankgate edge build` (proxy/edge/build.py): validation as `serve` does it, refusals by
YAML path, models against their pins, the bundle (node, esbuild) and wrangler.toml."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from models.contract import sha256_file
from tests.support.common import dot_model
from tests.support.edge import EDGE_DIR, ROOT, rankgate, skip_without_node

ROUTES = """\
models:
  m: {{path: m.onnx, sha256: "{sha}"}}
  same: {{path: m.onnx}}
  other: {{path: m.onnx}}
routes:
  - name: feed
    match: {{path: /feed}}
    model: m
    experiments: [{{name: beta, when: {{header: {{X-Beta: "1"}}}}, model: same}}]
"""


def write(tmp: Path, routes: str, origin: str = "http://127.0.0.1:9000") -> Path:
    (tmp / "routes.yaml").write_text(routes)
    cfg = tmp / "rankgate.yaml"
    cfg.write_text(f'origin: {{url: "{origin}"}}\nembeddings: {{dim: 8}}\nroutes: routes.yaml\n')
    return cfg


@pytest.fixture
def config(tmp_path: Path) -> Path:
    model = dot_model(tmp_path / "m.onnx")
    return write(tmp_path, ROUTES.format(sha=sha256_file(model)))


def test_build_writes_a_deployable_directory(tmp_path: Path, config: Path) -> None:
    skip_without_node()
    out = tmp_path / "out"
    done = rankgate("edge", "build", "--config", str(config), "--out", str(out), "--name", "feeds")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"built {re.escape(str(out))}: 1 route\(s\) \(feed\), models m, same; "
        r"[\d.]+ MB, [\d.]+ MB gzipped \(onnxruntime-web 1\.30\.0\)\n",
        done.stdout,
    )
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "build.json",
        "config.json",
        "models/m.onnx",
        "ort-wasm-simd-threaded.wasm",
        "worker.js",
        "wrangler.toml",
    ]
    config_json = json.loads((out / "config.json").read_text())
    digest = sha256_file(tmp_path / "m.onnx")
    # two names for one file: one module; a model no route names is not bundled
    assert config_json["models"] == {
        "m": {"module": "models/m.onnx", "sha256": digest},
        "same": {"module": "models/m.onnx", "sha256": digest},
    }
    assert config_json["source"]["routes"] == "routes.yaml"
    manifest = json.loads((out / "build.json").read_text())
    pinned = json.loads((EDGE_DIR / "package.json").read_text())["dependencies"]
    assert manifest["versions"]["onnxruntime-web"] == pinned["onnxruntime-web"]
    assert [m["type"] for m in manifest["modules"]] == ["ESModule", "CompiledWasm", "Data"]
    assert manifest["sizes"]["gzip"] < 10_000_000 < manifest["sizes"]["raw"] + 10_000_000
    wrangler = tomllib.loads((out / "wrangler.toml").read_text())
    assert wrangler["name"] == "feeds"
    assert wrangler["main"] == "worker.js"
    assert wrangler["compatibility_date"] == manifest["compatibility_date"]
    assert wrangler["compatibility_flags"] == ["nodejs_compat"]
    assert wrangler["no_bundle"] is True and wrangler["find_additional_modules"] is True
    assert {r["type"]: r["globs"] for r in wrangler["rules"]} == {
        "CompiledWasm": ["**/*.wasm"],
        "Data": ["**/*.onnx"],
    }
    assert wrangler["vars"] == {"ORIGIN": "http://127.0.0.1:9000"}
    assert wrangler["kv_namespaces"] == [
        {"binding": "EMBEDDINGS", "id": "REPLACE_WITH_YOUR_KV_NAMESPACE_ID"}
    ]
    # the bundle names no path of this machine
    bundle = (out / "worker.js").read_text()
    assert str(tmp_path) not in bundle and str(ROOT) not in bundle


def test_dropped_features_are_said_one_line_each(tmp_path: Path, config: Path) -> None:
    skip_without_node()
    quiet = rankgate("edge", "build", "--config", str(config), "--out", str(tmp_path / "a"))
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    with config.open("a") as f:
        f.write("exposures: {enabled: true, sink: jsonl}\nevents: {enabled: true}\n")
    done = rankgate("edge", "build", "--config", str(config), "--out", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr  # built all the same
    assert done.stdout.startswith("built ")
    assert done.stderr.splitlines() == [
        f"rankgate edge build: not at the edge: {config}: exposures.enabled: the Worker "
        "writes no exposure records and sends no X-Rankgate-Id header: `rankgate "
        "experiments report` sees none of its traffic",
        f"rankgate edge build: not at the edge: {config}: events.enabled: the Worker does "
        "not take POST /_rankgate/events: clicks sent there reach the origin, unrecorded",
    ]


def test_rebuild_replaces_its_own_files_only(tmp_path: Path, config: Path) -> None:
    skip_without_node()
    out = tmp_path / "out"
    (out / "models").mkdir(parents=True)
    (out / "models" / "old.onnx").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    args = ("edge", "build", "--config", str(config), "--out", str(out))
    assert rankgate(*args).returncode == 0
    assert sorted(p.name for p in (out / "models").iterdir()) == ["m.onnx"]
    assert (out / "notes.txt").read_text() == "mine"
    kv = rankgate(*args, "--kv-namespace-id", "0f2ac74b498b48028cb68387c421e279")
    assert kv.returncode == 0
    wrangler = tomllib.loads((out / "wrangler.toml").read_text())
    assert wrangler["kv_namespaces"][0]["id"] == "0f2ac74b498b48028cb68387c421e279"


def test_a_relative_out_is_relative_to_where_it_runs(tmp_path: Path, config: Path) -> None:
    skip_without_node()
    done = rankgate("edge", "build", "--config", str(config), "--out", "out/edge", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "edge" / "worker.js").is_file()


def test_invalid_routes_are_refused_as_serve_refuses_them(tmp_path: Path) -> None:
    dot_model(tmp_path / "m.onnx")
    cfg = write(tmp_path, ROUTES.format(sha="0" * 64))
    done = rankgate("edge", "build", "--config", str(cfg), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert f"{tmp_path / 'routes.yaml'}: models.m.sha256: mismatch: file is " in done.stderr
    assert not (tmp_path / "out").exists()
    cfg = write(tmp_path, "routes:\n  - {name: r, match: {path: /f}, model: ghost}\n")
    done = rankgate("edge", "build", "--config", str(cfg), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "routes[0].model: unknown model 'ghost' (known: none)" in done.stderr


def test_what_the_edge_cannot_honour_refuses_the_build(tmp_path: Path) -> None:
    """docs/guides/edge.md's example: each problem on its own line, by YAML path."""
    dot_model(tmp_path / "m.onnx")
    routes = """\
models: {m: {path: m.onnx}}
routes:
  - name: r
    match: {path: /f}
    model: m
    plugins:
      - {use: jwt, algorithm: HS256, secret: "0123456789abcdef0123456789abcdef"}
      - {use: pin, field: sponsored}
      - {use: filter, redis_set: "seen:{user}"}
"""
    cfg = write(tmp_path, routes)
    done = rankgate("edge", "build", "--config", str(cfg), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    readme = (ROOT / "docs" / "guides" / "edge.md").read_text()
    example = re.search(
        r"\$ rankgate edge build --config config/rankgate.yaml.*?\n(.*?)```", readme, re.S
    )
    assert example is not None
    expected = [line.split("routes.yaml: ", 1)[1] for line in example.group(1).splitlines()]
    got = [line.split("routes.yaml: ", 1)[1] for line in done.stderr.splitlines()]
    assert got == expected
    assert not (tmp_path / "out").exists()


def test_refusals_name_their_file(tmp_path: Path) -> None:
    dot_model(tmp_path / "m.onnx")
    routes = (
        "models: {m: {path: m.onnx}}\n"
        "routes: [{name: r, match: {path: /f}, model: m,\n"
        "          plugins: [{use: diversify, lambda: 0.5}]}]\n"
    )
    cfg = write(tmp_path, routes)
    cfg.write_text(cfg.read_text().replace('"}', '", host_header: preserve}', 1))
    done = rankgate("edge", "build", "--config", str(cfg), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"{cfg}: origin.host_header: cannot be honoured at the edge")
    assert lines[1].startswith(
        f"{tmp_path / 'routes.yaml'}: routes[0].plugins[0].use: plugin 'diversify'"
    )
    assert len(lines) == 2


def test_without_node_the_build_says_so(tmp_path: Path, config: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "edge",
            "build",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "rankgate edge build: node is not installed (the Worker is bundled with esbuild, "
        "on node 20+)\n"
    )
