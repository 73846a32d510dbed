"""One immutable snapshot of ``routes.yaml``: compiled routes and warm model sessions.

Requests read ``store.current`` once and keep that object, so a reload (which builds a
whole new snapshot off the event loop and swaps one reference) never changes what a
request in flight sees.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from models.contract import ModelContractError, sha256_bytes
from plugins.registry import PluginLoadError
from plugins.run import RoutePlugins
from proxy.config import yamlload
from proxy.config.routes import Match, Route, RoutesFile
from proxy.routing.arms import ArmChooser
from proxy.routing.limits import (
    DEFAULT_POLICY,
    NO_DEADLINE,
    Deadline,
    RoutesPolicy,
    model_file_problem,
    read_model_file,
    read_routes_file,
)
from proxy.routing.plugins import compile_plugins
from proxy.routing.reads import BodyPlan, plan
from proxy.routing.sessions import ModelSession, load_model

# Where the models of a retired snapshot are freed: ORT returns its arenas in the
# session's destructor (a few ms for a 20 MB model), which must not stall the event loop.
# A SimpleQueue, not an executor: __del__ runs wherever a GC pass happens, e.g. inside
# ThreadPoolExecutor.submit (asyncio.to_thread) holding concurrent.futures' global lock,
# which another submit() would take again: a deadlocked event loop. SimpleQueue.put is
# reentrant (documented safe in __del__). The thread starts with the first store, never
# from __del__ (starting a thread takes locks a GC pass may be holding).
_RETIRED: queue.SimpleQueue[Mapping[str, ModelSession]] = queue.SimpleQueue()
_releaser_lock = threading.Lock()
_releaser: threading.Thread | None = None


def _release_forever() -> None:
    while True:
        models = _RETIRED.get()
        del models  # the last reference: the sessions are freed here, off the loop


def ensure_releaser() -> None:
    """Start the (daemon) thread that frees retired models, once per process."""
    global _releaser
    with _releaser_lock:
        if _releaser is None:
            _releaser = threading.Thread(
                target=_release_forever, name="rankgate-release", daemon=True
            )
            _releaser.start()


def _path_matcher(match: Match) -> Callable[[str], bool]:
    if match.prefix is not None:
        prefix = match.prefix
        return lambda path: path.startswith(prefix)
    assert match.path is not None
    if "{" not in match.path:
        exact = match.path
        return lambda path: path == exact
    pattern = re.escape(match.path)
    pattern = re.sub(r"\\\{[A-Za-z_][A-Za-z0-9_]*\\\}", "[^/]+", pattern)
    regex = re.compile(f"^{pattern}$")
    return lambda path: regex.match(path) is not None


@dataclass(frozen=True)
class CompiledRoute:
    spec: Route
    matches_path: Callable[[str], bool] = field(repr=False)
    methods: frozenset[str]
    arms: ArmChooser
    vary: tuple[str, ...]
    plugins: RoutePlugins = field(repr=False)
    # What the route reads of a body; None: the whole document (proxy/routing/reads.py).
    reads: BodyPlan | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def compile(
        cls,
        route: Route,
        where: str = "route",
        base_dir: Path | None = None,
        plugin_paths: tuple[Path, ...] = (),
    ) -> CompiledRoute:
        """Raises PluginLoadError (lines with YAML paths under ``where``) for bad plugins."""
        plugins = compile_plugins(route, where, base_dir, plugin_paths)
        arms = ArmChooser.for_route(route)
        user_vary = [v for p in plugins.user for v in p.vary]
        # Only what can choose the body: a Vary on Cookie for a route that never reads
        # one would split shared caches per session for nothing.
        vary = tuple(dict.fromkeys([*user_vary, *arms.vary_headers(), *plugins.vary]))
        return cls(
            spec=route,
            matches_path=_path_matcher(route.match),
            methods=frozenset(route.match.methods),
            arms=arms,
            vary=vary,
            plugins=plugins,
            reads=plan(plugins),
        )

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and self.matches_path(path)


@dataclass(frozen=True)
class Fingerprint:
    """What a snapshot was built from: the routes file's bytes and each model's bytes.

    Two equal fingerprints serve the same thing, so a reload between them changes
    nothing (no version bump)."""

    routes_sha256: str
    models: frozenset[tuple[str, str]]  # (registry name, file sha256)


@dataclass(frozen=True)
class Snapshot:
    version: int
    loaded_at: float
    source: Path | str  # a file, or a label (routes_source: redis)
    source_sha256: str
    routes: tuple[CompiledRoute, ...]
    models: Mapping[str, ModelSession]

    def __del__(self) -> None:
        # The last holder of an old snapshot (often a request finishing on the event loop)
        # hands its models to the releaser thread; sessions the new snapshot shares stay.
        if self.models:
            _RETIRED.put(self.models)

    def match(self, method: str, path: str) -> CompiledRoute | None:
        for route in self.routes:
            if route.matches(method, path):
                return route
        return None

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(
            self.source_sha256, frozenset((n, m.sha256) for n, m in self.models.items())
        )

    def describe(self) -> dict[str, object]:
        """What /admin/routes shows."""
        return {
            "version": self.version,
            "loaded_at": self.loaded_at,
            "source": str(self.source),
            "source_sha256": self.source_sha256,
            "models": {
                name: {
                    "path": str(m.path),
                    "sha256": m.sha256,
                    "size": m.size,
                    "dim": m.dim,
                    "loaded_at": m.loaded_at,
                    "load_seconds": round(m.load_seconds, 4),
                }
                for name, m in self.models.items()
            },
            "routes": [
                {
                    **r.spec.model_dump(mode="json", exclude_none=True),
                    "arms": r.arms.describe(),
                    "vary": list(r.vary),
                }
                for r in self.routes
            ],
        }


def empty_snapshot(source: Path) -> Snapshot:
    return Snapshot(0, time.time(), source, "", (), MappingProxyType({}))


def build_snapshot(
    path: Path,
    dim: int,
    version: int,
    previous: Snapshot | None,
    policy: RoutesPolicy = DEFAULT_POLICY,
    deadline: Deadline = NO_DEADLINE,
) -> Snapshot:
    """Parse, validate, load and warm everything. Blocking; raises yamlload.ConfigError."""
    raw = read_routes_file(path, policy)
    return build_snapshot_bytes(raw, path, path.parent, dim, version, previous, policy, deadline)


def build_snapshot_bytes(
    raw: bytes,
    label: Path | str,
    base_dir: Path,
    dim: int,
    version: int,
    previous: Snapshot | None,
    policy: RoutesPolicy = DEFAULT_POLICY,
    deadline: Deadline = NO_DEADLINE,
) -> Snapshot:
    """build_snapshot for routes that are not a file (routes_source: redis): ``label``
    names them in errors and /admin/routes, relative paths resolve against ``base_dir``.
    Sizes and counts are checked before anything else (rankgate.yaml's limits)."""
    source = str(label)
    policy.check_size(len(raw), source)
    doc = yamlload.parse_yaml(raw, source)
    policy.check_counts(doc, source)
    spec = yamlload.validate(RoutesFile, doc, source)

    # Plugins first (cheap): their problems are reported with the models' ones.
    problems: list[str] = []
    routes: list[CompiledRoute] = []
    for i, route in enumerate(spec.routes):
        try:
            routes.append(
                CompiledRoute.compile(route, f"routes[{i}]", base_dir, policy.plugin_paths)
            )
        except PluginLoadError as exc:
            problems.extend(exc.problems)
    models = _load_models(spec, base_dir, dim, previous, policy, deadline, problems)
    if problems:
        raise yamlload.ConfigError(source, problems)
    return Snapshot(
        version=version,
        loaded_at=time.time(),
        source=label,
        source_sha256=sha256_bytes(raw),
        routes=tuple(routes),
        models=MappingProxyType(models),
    )


def _load_models(
    spec: RoutesFile,
    base_dir: Path,
    dim: int,
    previous: Snapshot | None,
    policy: RoutesPolicy,
    deadline: Deadline,
    problems: list[str],
) -> dict[str, ModelSession]:
    """Every model: a regular file within models.max_bytes, hashed (and loaded unless
    a warm session has the same bytes) under the reload's deadline."""
    old = dict(previous.models) if previous else {}
    models: dict[str, ModelSession] = {}
    limit = policy.max_model_bytes
    for name, ref in spec.models.items():
        model_path = (base_dir / ref.path).resolve()
        problem = model_file_problem(model_path, limit)
        if problem is not None:
            problems.append(f"models.{name}.path: {problem}")
            continue
        try:
            _, digest = read_model_file(model_path, limit, deadline, keep=False)
        except (OSError, ValueError) as exc:
            problems.append(f"models.{name}.path: {_why(exc, model_path)}")
            continue
        if ref.sha256 is not None and digest != ref.sha256:
            problems.append(
                f"models.{name}.sha256: mismatch: file is {digest}, expected {ref.sha256}"
            )
            continue
        # Same file content as a model already warm (in the old snapshot, or under another
        # name in this one): share its session, no cold start.
        warm = (*models.values(), *old.values())
        reuse = next((m for m in warm if m.sha256 == digest and m.dim == dim), None)
        if reuse is not None:
            same = reuse.name == name and reuse.path == model_path
            models[name] = reuse if same else replace(reuse, name=name, path=model_path)
            continue
        try:
            data, _ = read_model_file(model_path, limit, deadline)
            models[name] = load_model(name, model_path, dim, ref.sha256, data)
        except (OSError, ValueError) as exc:
            problems.append(f"models.{name}.path: {_why(exc, model_path)}")
        except ModelContractError as exc:
            problems.append(f"models.{name}: {exc}")
        deadline.check("loading models")
    return models


def _why(exc: Exception, path: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {path}"
    if isinstance(exc, OSError):
        return f"cannot read {path}: {exc.strerror}"
    return str(exc)
