"""``rankgate edge build``: the routes of a rankgate.yaml as a Cloudflare Worker.

Steps: validate the config and routes exactly as ``rankgate serve`` would (models loaded,
contract and sha256 pins checked), compile the routes for the Worker (refusing what it
cannot honour, by YAML path), copy the models the routes name (their bytes checked
against the pins again), bundle the Worker with esbuild (``edge/build.mjs``, node), and
write ``wrangler.toml``. The output directory then holds everything a deploy uploads:

    worker.js  ort-wasm-simd-threaded.wasm  models/*.onnx  config.json  build.json
    wrangler.toml
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.contract import sha256_bytes
from proxy import __version__
from proxy.config import yamlload
from proxy.config.routes import RoutesFile
from proxy.config.settings import Settings, load_settings
from proxy.edge.config import compile_edge
from proxy.routing.limits import RoutesPolicy
from proxy.routing.snapshot import build_snapshot

EDGE_DIR = Path(__file__).resolve().parents[2] / "edge"  # the Worker's source, at the top
DEFAULT_NAME = "rankgate"
KV_ID_PLACEHOLDER = "REPLACE_WITH_YOUR_KV_NAMESPACE_ID"
# Files a build writes; a rebuild replaces them and leaves anything else alone.
OUTPUTS = ("worker.js", "ort-wasm-simd-threaded.wasm", "config.json", "build.json", "wrangler.toml")


class EdgeBuildError(Exception):
    """The build cannot go on; the message says why and what to do."""


class EdgeRefusedError(Exception):
    """Files that validate but ask for what the Worker cannot do: ``file: path: message``
    lines, every one of them (exit status 2, like a file that does not validate)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class EdgeBuild:
    out: Path
    config: dict[str, Any]
    manifest: dict[str, Any]  # build.json: modules, runtime settings, versions, sizes
    dropped: list[str]  # rankgate.yaml features the Worker leaves out, one line each


def node_ready(edge_dir: Path = EDGE_DIR) -> str | None:
    """None when node and the Worker's npm dependencies are there, else what is missing."""
    if shutil.which("node") is None:
        return "node is not installed (the Worker is bundled with esbuild, on node 20+)"
    if not (edge_dir / "build.mjs").is_file():
        return f"the Worker's source is not at {edge_dir} (run rankgate from a checkout)"
    if not (edge_dir / "node_modules" / "esbuild").is_dir():
        return f"the Worker's npm dependencies are not installed: run `npm ci` in {edge_dir}"
    return None


def _copy_models(
    compiled: dict[str, Any], modules: dict[str, str], routes: RoutesFile, base: Path, out: Path
) -> None:
    """Copy each named model once per distinct content; pins are checked on the bytes
    that are copied, so a file swapped after validation cannot slip in."""
    problems = []
    by_digest: dict[str, str] = {}
    (out / "models").mkdir()
    for name, module in modules.items():
        ref = routes.models[name]
        data = (base / ref.path).read_bytes()
        digest = sha256_bytes(data)
        if ref.sha256 is not None and digest != ref.sha256:
            problems.append(
                f"models.{name}.sha256: mismatch: file is {digest}, expected {ref.sha256}"
            )
            continue
        if digest not in by_digest:
            by_digest[digest] = module
            (out / module).write_bytes(data)
        compiled["models"][name] = {"module": by_digest[digest], "sha256": digest}
    if problems:
        raise yamlload.ConfigError("routes", problems)


def _bundle(out: Path, edge_dir: Path) -> dict[str, Any]:
    missing = node_ready(edge_dir)
    if missing is not None:
        raise EdgeBuildError(missing)
    proc = subprocess.run(
        ["node", str(edge_dir / "build.mjs"), "--out", str(out)],
        cwd=edge_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise EdgeBuildError(f"bundling the Worker failed:\n{proc.stderr.strip() or proc.stdout}")
    manifest: dict[str, Any] = json.loads((out / "build.json").read_text())
    return manifest


def _toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string: JSON's escapes are valid in it


def wrangler_toml(
    manifest: dict[str, Any], settings: Settings, name: str, kv_namespace_id: str, header: str
) -> str:
    flags = ", ".join(_toml(f) for f in manifest["compatibility_flags"])
    return f"""\
# {header}
# Deploy from this directory with wrangler (needs a Cloudflare account): docs/guides/edge.md.
name = {_toml(name)}
main = {_toml(manifest["main"])}
compatibility_date = {_toml(manifest["compatibility_date"])}
compatibility_flags = [{flags}]
# worker.js is bundled already (esbuild); the .wasm and .onnx files are its modules.
no_bundle = true
find_additional_modules = true
rules = [
  {{ type = "CompiledWasm", globs = ["**/*.wasm"], fallthrough = false }},
  {{ type = "Data", globs = ["**/*.onnx"], fallthrough = false }},
]
# A Worker on a route in front of your site: uncomment and set the ORIGIN below to "".
# routes = [{{ pattern = "example.com/api/*", zone_name = "example.com" }}]

[vars]
# Base URL the requests go to; "" = each request's own URL (the zone's origin).
ORIGIN = {_toml(settings.origin.url)}

[[kv_namespaces]]
# Vectors: `rankgate edge kv` writes them as bulk files for `wrangler kv bulk put`.
binding = {_toml(manifest["kv_binding"])}
id = {_toml(kv_namespace_id)}
"""


def build(
    config_path: Path,
    out: Path,
    *,
    name: str = DEFAULT_NAME,
    kv_namespace_id: str = KV_ID_PLACEHOLDER,
    edge_dir: Path = EDGE_DIR,
) -> EdgeBuild:
    """Raises yamlload.ConfigError (files that do not validate), EdgeRefusedError (what
    the edge cannot honour) or EdgeBuildError (the bundling)."""
    settings = load_settings(config_path)
    routes_path = settings.routes_path
    # Exactly what `rankgate serve` would load: a file it refuses is refused here.
    build_snapshot(
        routes_path, settings.embeddings.dim, 1, None, RoutesPolicy.from_settings(settings)
    )
    raw = routes_path.read_bytes()
    routes = yamlload.load(RoutesFile, routes_path)
    source = {
        "rankgate": __version__,
        "config": config_path.name,
        "routes": routes_path.name,
        "routes_sha256": sha256_bytes(raw),
        "origin": settings.origin.url,
    }
    compiled = compile_edge(settings, routes, source)
    refused = [f"{config_path}: {p}" for p in compiled.settings_problems]
    refused += [f"{routes_path}: {p}" for p in compiled.problems]
    if refused:
        raise EdgeRefusedError(refused)

    out = out.resolve()  # the bundler runs in edge/: a relative path would land there
    out.mkdir(parents=True, exist_ok=True)
    for stale in OUTPUTS:
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "models", ignore_errors=True)
    try:
        _copy_models(compiled.config, compiled.models, routes, routes_path.parent, out)
    except yamlload.ConfigError as exc:
        raise yamlload.ConfigError(str(routes_path), exc.problems) from None
    (out / "config.json").write_text(json.dumps(compiled.config, indent=2) + "\n")
    manifest = _bundle(out, edge_dir)
    header = (
        f"Written by `rankgate edge build` (rankgate {__version__}) from {config_path.name} "
        f"and {routes_path.name} (sha256 {source['routes_sha256'][:12]})."
    )
    (out / "wrangler.toml").write_text(
        wrangler_toml(manifest, settings, name, kv_namespace_id, header)
    )
    return EdgeBuild(
        out, compiled.config, manifest, [f"{config_path}: {d}" for d in compiled.dropped]
    )
