"""One immutable snapshot of ``routes.yaml``: compiled routes and warm model sessions.

Requests read ``store.current`` once and keep that object, so a reload (which builds a
whole new snapshot off the event loop and swaps one reference) never changes what a
request in flight sees.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from proxy import yamlconf
from proxy.contract import ModelContractError, sha256_bytes, sha256_file
from proxy.experiments import ArmChooser
from proxy.routes import Match, Route, RoutesFile
from proxy.sessions import ModelSession, load_model

log = logging.getLogger("rankgate.snapshot")


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

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def compile(cls, route: Route) -> CompiledRoute:
        sources = tuple((kind, name) for kind, _, name in (s.partition(":") for s in route.user))
        arms = ArmChooser.for_route(route)
        vary: list[str] = []
        for kind, name in sources:
            if kind == "cookie":
                vary.append("Cookie")
            elif kind == "header":
                vary.append(name)
        vary.extend(arms.vary_headers())
        if "Cookie" not in vary:
            vary.insert(0, "Cookie")  # user ids usually come from a cookie; be safe
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
        )

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and self.matches_path(path)


@dataclass(frozen=True)
class Snapshot:
    version: int
    loaded_at: float
    source: Path
    source_sha256: str
    routes: tuple[CompiledRoute, ...]
    models: Mapping[str, ModelSession]

    def match(self, method: str, path: str) -> CompiledRoute | None:
        for route in self.routes:
            if route.matches(method, path):
                return route
        return None

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
            "routes": [r.spec.model_dump(mode="json", exclude_none=True) for r in self.routes],
        }


def empty_snapshot(source: Path) -> Snapshot:
    return Snapshot(0, time.time(), source, "", (), MappingProxyType({}))


def build_snapshot(path: Path, dim: int, version: int, previous: Snapshot | None) -> Snapshot:
    """Parse, validate, load and warm everything. Blocking; raises yamlconf.ConfigError."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise yamlconf.ConfigError(source, ["file not found"]) from None
    spec = yamlconf.validate(RoutesFile, yamlconf.parse_yaml(raw, source), source)

    old = dict(previous.models) if previous else {}
    models: dict[str, ModelSession] = {}
    problems = []
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
        # Same file content as a model already warm: keep its session (no cold start).
        reuse = next((m for m in old.values() if m.sha256 == digest and m.dim == dim), None)
        if reuse is not None:
            models[name] = reuse if reuse.name == name else _renamed(reuse, name)
            continue
        try:
            models[name] = load_model(name, model_path, dim, ref.sha256)
        except ModelContractError as exc:
            problems.append(f"models.{name}: {exc}")
    if problems:
        raise yamlconf.ConfigError(source, problems)
    routes = tuple(CompiledRoute.compile(r) for r in spec.routes)
    return Snapshot(
        version=version,
        loaded_at=time.time(),
        source=path,
        source_sha256=sha256_bytes(raw),
        routes=routes,
        models=MappingProxyType(models),
    )


def _renamed(model: ModelSession, name: str) -> ModelSession:
    return replace(model, name=name)


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
        self.listeners: list[ReloadListener] = []
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self.current.version > 0

    def load_initial(self) -> Snapshot:
        """First load at start-up; an error here is fatal (raised to the CLI)."""
        self.current = build_snapshot(self.path, self.dim, 1, None)
        self.last_reload_at = time.time()
        self._notify("ok", self.current, None)
        return self.current

    async def reload(self, trigger: str = "manual") -> bool:
        """Build a new snapshot off the loop; swap it in only if all of it is good."""
        async with self._lock:
            previous = self.current
            try:
                snapshot = await asyncio.to_thread(
                    build_snapshot, self.path, self.dim, previous.version + 1, previous
                )
            except yamlconf.ConfigError as exc:
                self.last_error = exc.render()
                self.last_error_at = time.time()
                log.error(
                    "routes reload refused (%s); still serving version %d: %s",
                    trigger,
                    previous.version,
                    exc.render(),
                )
                self._notify("error", None, self.last_error)
                return False
            except Exception as exc:  # never let a reload take the proxy down
                self.last_error = f"{self.path}: unexpected error: {exc!r}"
                self.last_error_at = time.time()
                log.exception("routes reload failed (%s)", trigger)
                self._notify("error", None, self.last_error)
                return False
            self.current = snapshot
            self.last_error = None
            self.last_reload_at = time.time()
            log.info(
                "routes reloaded (%s): version %d, %d routes, models %s",
                trigger,
                snapshot.version,
                len(snapshot.routes),
                sorted(snapshot.models),
            )
            self._notify("ok", snapshot, None)
            return True

    def _notify(self, result: str, snapshot: Snapshot | None, error: str | None) -> None:
        for listener in self.listeners:
            try:
                listener(result, snapshot, error)
            except Exception:
                log.exception("reload listener failed")
