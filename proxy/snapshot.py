"""One immutable snapshot of ``routes.yaml``: compiled routes and warm model sessions.

Requests read ``store.current`` once and keep that object, so a reload (which builds a
whole new snapshot off the event loop and swaps one reference) never changes what a
request in flight sees.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from plugins.registry import NO_PLUGINS, PluginLoadError, compile_route
from plugins.run import RoutePlugins
from proxy import yamlconf
from proxy.contract import ModelContractError, sha256_bytes, sha256_file
from proxy.experiments import ArmChooser
from proxy.routes import Match, Route, RoutesFile
from proxy.sessions import ModelSession, load_model

log = logging.getLogger("rankgate.snapshot")

# Where the models of a retired snapshot are freed: ORT returns its arenas in the
# session's destructor (a few ms for a 20 MB model), which must not stall the event loop.
# A SimpleQueue, not an executor: __del__ runs wherever a GC pass happens, e.g. inside
# ThreadPoolExecutor.submit (asyncio.to_thread) holding concurrent.futures' global lock,
# which another submit() would take again: a deadlocked event loop. SimpleQueue.put is
# reentrant (documented safe in __del__).
_RETIRED: queue.SimpleQueue[Mapping[str, ModelSession]] = queue.SimpleQueue()


def _releaser() -> None:
    while True:
        models = _RETIRED.get()
        del models  # the last reference: the sessions are freed here, off the loop


threading.Thread(target=_releaser, name="rankgate-release", daemon=True).start()


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


def _dotted(path: str) -> tuple[str, ...]:
    return tuple(path.split(".")) if path else ()


@dataclass(frozen=True)
class CompiledRoute:
    spec: Route
    matches_path: Callable[[str], bool] = field(repr=False)
    methods: frozenset[str]
    user_sources: tuple[tuple[str, str], ...]
    items_path: tuple[str, ...]
    id_path: tuple[str, ...]
    arms: ArmChooser
    vary: tuple[str, ...]
    plugins: RoutePlugins = field(default=NO_PLUGINS, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def compile(
        cls, route: Route, where: str = "route", base_dir: Path | None = None
    ) -> CompiledRoute:
        """Raises PluginLoadError (lines with YAML paths under ``where``) for bad plugins."""
        plugins = compile_route(route, where, base_dir)
        # User plugins replace the route's user: list (compile_route refuses both).
        sources = (
            ()
            if plugins.user
            else tuple((kind, name) for kind, _, name in (s.partition(":") for s in route.user))
        )
        arms = ArmChooser.for_route(route)
        vary: list[str] = []
        for kind, name in sources:
            if kind == "cookie":
                vary.append("Cookie")
            elif kind == "header":
                vary.append(name)
        vary.extend(arms.vary_headers())
        vary.extend(plugins.vary)
        # Only what can choose the body: a Vary on Cookie for a route that never reads
        # one would split shared caches per session for nothing.
        deduped = tuple(dict.fromkeys(vary))
        return cls(
            spec=route,
            matches_path=_path_matcher(route.match),
            methods=frozenset(route.match.methods),
            user_sources=sources,
            items_path=_dotted(route.items),
            id_path=_dotted(route.item_id),
            arms=arms,
            vary=deduped,
            plugins=plugins,
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


def build_snapshot(path: Path, dim: int, version: int, previous: Snapshot | None) -> Snapshot:
    """Parse, validate, load and warm everything. Blocking; raises yamlconf.ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise yamlconf.ConfigError(str(path), ["file not found"]) from None
    return build_snapshot_bytes(raw, path, path.parent, dim, version, previous)


def build_snapshot_bytes(
    raw: bytes,
    label: Path | str,
    base_dir: Path,
    dim: int,
    version: int,
    previous: Snapshot | None,
) -> Snapshot:
    """build_snapshot for routes that are not a file (routes_source: redis): ``label``
    names them in errors and /admin/routes, relative paths resolve against ``base_dir``."""
    path = base_dir / "routes.yaml"  # only its parent is used: where relative paths start
    source = str(label)
    spec = yamlconf.validate(RoutesFile, yamlconf.parse_yaml(raw, source), source)

    # Plugins first (cheap): their problems are reported with the models' ones.
    problems: list[str] = []
    routes: list[CompiledRoute] = []
    for i, route in enumerate(spec.routes):
        try:
            routes.append(CompiledRoute.compile(route, f"routes[{i}]", path.parent))
        except PluginLoadError as exc:
            problems.extend(exc.problems)

    old = dict(previous.models) if previous else {}
    models: dict[str, ModelSession] = {}
    for name, ref in spec.models.items():
        model_path = (path.parent / ref.path).resolve()
        try:
            digest = sha256_file(model_path)
        except OSError:
            problems.append(f"models.{name}.path: file not found: {model_path}")
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
            models[name] = load_model(name, model_path, dim, ref.sha256)
        except ModelContractError as exc:
            problems.append(f"models.{name}: {exc}")
    if problems:
        raise yamlconf.ConfigError(source, problems)
    return Snapshot(
        version=version,
        loaded_at=time.time(),
        source=label,
        source_sha256=sha256_bytes(raw),
        routes=tuple(routes),
        models=MappingProxyType(models),
    )


RESULTS = ("ok", "unchanged", "error")


@dataclass(frozen=True)
class ReloadOutcome:
    result: str  # ok: swapped in | unchanged: same content, nothing to do | error: refused
    trigger: str  # watch, poll, sighup, admin, ...
    version: int  # the active version after the attempt
    error: str | None
    seconds: float
    at: float


# (result, snapshot now active or None on error, error text or None). Called on the
# event loop after every reload attempt, and once with "ok" for the initial load.
ReloadListener = Callable[[str, "Snapshot | None", "str | None"], None]


class SnapshotStore:
    """Holds the current snapshot and swaps in new ones; reloads are serialized."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.current: Snapshot = empty_snapshot(path)
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_reload_at: float | None = None
        self.last_outcome: ReloadOutcome | None = None
        # Reload attempts by result (not the initial load): rankgate_reloads_total{result}.
        self.reload_counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
        # How file changes reach us, set by the watcher: events | poll | off.
        self.watch_mode = "off"
        self.listeners: list[ReloadListener] = []
        # routes_source: redis (proxy/routesource.py) replaces how a snapshot is built
        # (blocking, in a thread: (version, previous) -> Snapshot, or ConfigError) and
        # adds what /admin/routes shows about the fleet.
        self.builder: Callable[[int, Snapshot | None], Snapshot] = self._build_file
        self.describe_source: Callable[[], Awaitable[dict[str, object]]] | None = None
        self._lock = asyncio.Lock()

    def _build_file(self, version: int, previous: Snapshot | None) -> Snapshot:
        return build_snapshot(self.path, self.dim, version, previous)

    @property
    def ready(self) -> bool:
        return self.current.version > 0

    def load_initial(self) -> Snapshot:
        """First load at start-up; an error here is fatal (raised to the CLI)."""
        self.current = self.builder(1, None)
        self.last_reload_at = time.time()
        self._notify("ok", self.current, None)
        return self.current

    async def reload(self, trigger: str = "manual") -> bool:
        """Reload (SIGHUP, admin); True unless the files were refused."""
        return (await self.reload_outcome(trigger)).result != "error"

    async def reload_outcome(
        self, trigger: str = "manual", *, if_changed: bool = False
    ) -> ReloadOutcome:
        """Build a new snapshot off the loop; swap it in only if all of it is good.

        ``if_changed`` (the file watcher): keep the active snapshot, result "unchanged",
        when routes.yaml and the models hash the same. An explicit reload always swaps,
        since plugins may read files of their own (a JWT key_file) that no hash covers.
        """
        async with self._lock:
            previous = self.current
            started = time.perf_counter()
            error: str | None = None
            snapshot: Snapshot | None = None
            try:
                snapshot = await asyncio.to_thread(self.builder, previous.version + 1, previous)
            except yamlconf.ConfigError as exc:
                error = exc.render()
            except Exception as exc:  # never let a reload take the proxy down
                log.exception("routes reload failed (%s)", trigger)
                error = f"{self.path}: unexpected error: {exc!r}"
            now = time.time()
            if error is not None:
                result = "error"
                self.last_error, self.last_error_at = error, now
                log.error(
                    "routes reload refused (%s); still serving version %d: %s",
                    trigger,
                    previous.version,
                    error,
                )
            elif snapshot is None:  # unreachable: no error means a snapshot was built
                raise AssertionError("reload built no snapshot")
            elif (
                if_changed and previous.version > 0 and snapshot.fingerprint == previous.fingerprint
            ):
                # The files say what is already served: keep it (and its version).
                result = "unchanged"
                self.last_error = None
                log.info("routes unchanged (%s): still version %d", trigger, previous.version)
            else:
                result = "ok"
                self.current = snapshot
                self.last_error = None
                self.last_reload_at = now
                log.info(
                    "routes reloaded (%s): version %d, %d routes, models %s",
                    trigger,
                    snapshot.version,
                    len(snapshot.routes),
                    sorted(snapshot.models),
                )
            del previous  # the old snapshot lives on only in requests still in flight
            self.reload_counts[result] += 1
            outcome = ReloadOutcome(
                result=result,
                trigger=trigger,
                version=self.current.version,
                error=error,
                seconds=time.perf_counter() - started,
                at=now,
            )
            self.last_outcome = outcome
            self._notify(result, None if error else self.current, error)
            return outcome

    def _notify(self, result: str, snapshot: Snapshot | None, error: str | None) -> None:
        for listener in self.listeners:
            try:
                listener(result, snapshot, error)
            except Exception:
                log.exception("reload listener failed")
