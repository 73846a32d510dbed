"""Loading plugins named in routes.yaml, with every check done at load time.

``use:`` names a plugin three ways, tried in this order:

1. a built-in short name (``pin``, ``filter``, ``diversify``, ``boost``, ``annotate``,
   ``jwt``, ``sources``, ``dotted``); these cannot be shadowed by an installed package;
2. ``module:Class`` (``mypkg.rules:MyRule``) of an installed plugin only: the target of a
   ``rankgate.plugins`` entry point, a module of this ``plugins`` package (the examples),
   or a module found under a directory that rankgate.yaml names (``plugins.paths``).
   Any other module name is refused without being imported: a routes version is data
   (perhaps pushed by someone else), and importing a module runs its code;
3. a name in the entry point group ``rankgate.plugins`` of an installed distribution
   (``[project.entry-points."rankgate.plugins"] myrule = "mypkg.rules:MyRule"``).

The class is checked against the hook specs (``plugins.hooks``), its options validated
with its ``Options`` model, and it is instantiated once. Any problem is a line
``routes[i].plugins[j]...: message`` in a ``PluginLoadError``; the snapshot builder
turns those into a refused routes file. A module is imported once per process: a
changed plugin module needs a restart, a changed option only a reload. Sorting a route's
plugins by kind is the proxy's business (``proxy.routing.plugins``).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import re
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from plugins.hooks import HOOKS
from plugins.run import LoadedPlugin
from plugins.spec import PluginSpec

ENTRY_POINT_GROUP = "rankgate.plugins"
BUILTINS: dict[str, str] = {
    "dotted": "plugins.builtin.dotted:DottedItems",
    "sources": "plugins.builtin.sources:RequestSources",
    "jwt": "plugins.builtin.jwt_user:JwtUser",
    "pin": "plugins.builtin.pin:Pin",
    "filter": "plugins.builtin.filter:Filter",
    "diversify": "plugins.builtin.diversify:Diversify",
    "boost": "plugins.builtin.boost:Boost",
    "annotate": "plugins.builtin.annotate:Annotate",
}
_USE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*(:[A-Za-z_][A-Za-z0-9_.]*)?$")


class PluginLoadError(Exception):
    """``problems`` are ``yaml.path: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _import(target: str) -> object:
    module_name, _, qualname = target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # a plugin module that fails to import is a bad file
        raise ValueError(f"importing {module_name!r} failed: {exc!r}") from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no {qualname!r}") from None
    return obj


def _under(file: object, paths: Sequence[Path]) -> bool:
    if not isinstance(file, str):
        return False
    real = Path(file).resolve()
    return any(real.is_relative_to(p.resolve()) for p in paths)


def _import_installed(use: str, paths: Sequence[Path]) -> object:
    """``module:Class`` if its module is an installed plugin (see the module's doc);
    ValueError, and nothing imported, otherwise."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.replace(" ", "") == use:
            try:
                return ep.load()
            except Exception as exc:
                raise ValueError(
                    f"loading entry point {ep.name!r} ({use}) failed: {exc!r}"
                ) from None
    module_name = use.partition(":")[0]
    top = module_name.split(".")[0]
    if top == __name__.split(".")[0]:  # this package (the examples), shipped with rankgate
        return _import(use)
    spec = importlib.machinery.PathFinder.find_spec(top, [str(p) for p in paths])
    if spec is None:
        where = ", ".join(str(p) for p in paths) or "none set"
        raise ValueError(
            f"module {module_name!r} is not an installed plugin: name a built-in "
            f"({', '.join(BUILTINS)}), a {ENTRY_POINT_GROUP} entry point, or a module under "
            f"plugins.paths in rankgate.yaml ({where}); it was not imported"
        )
    loaded = sys.modules.get(top)
    if loaded is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[top] = module
        try:
            assert spec.loader is not None
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(top, None)
            raise ValueError(f"importing {top!r} failed: {exc!r}") from None
    else:
        origin = getattr(loaded, "__file__", None) or next(
            iter(getattr(loaded, "__path__", [])), None
        )
        if not _under(origin, paths):
            raise ValueError(
                f"module {top!r} is already imported from {origin}, not from plugins.paths"
            )
    return _import(use)


def resolve(use: str, paths: Sequence[Path] = ()) -> type:
    """The plugin class that ``use`` names (ValueError says why there is none);
    ``paths``: rankgate.yaml's ``plugins.paths``."""
    if not _USE.match(use):
        raise ValueError(f"{use!r}: want a plugin name or 'module:Class'")
    if use in BUILTINS:
        obj = _import(BUILTINS[use])
    elif ":" in use:
        obj = _import_installed(use, paths)
    else:
        found = {ep.value: ep for ep in entry_points(group=ENTRY_POINT_GROUP, name=use)}
        if not found:
            installed = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
            raise ValueError(
                f"unknown plugin {use!r} (built in: {', '.join(BUILTINS)}; installed "
                f"{ENTRY_POINT_GROUP} entry points: {', '.join(installed) or 'none'}; "
                "or give 'module:Class')"
            )
        if len(found) > 1:
            raise ValueError(f"entry point {use!r} is ambiguous: {', '.join(sorted(found))}")
        ep = next(iter(found.values()))
        try:
            obj = ep.load()
        except Exception as exc:
            raise ValueError(f"loading entry point {use!r} ({ep.value}) failed: {exc!r}") from None
    if not isinstance(obj, type):
        raise ValueError(f"{use!r} is not a class")
    return obj


def check_hooks(cls: type) -> list[str]:
    """Problems with the class's hooks: unknown names, wrong signatures, sync/async."""
    problems: list[str] = []
    defined: set[str] = set()
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, type | property):
            continue  # nested classes (Options) and properties are not hooks
        if isinstance(attr, staticmethod | classmethod):
            problems.append(f"{name}: hooks are plain methods; helpers need a leading '_'")
            continue
        if not inspect.isfunction(attr):
            continue  # data attributes (e.g. vary)
        spec = HOOKS.get(name)
        if spec is None:
            problems.append(
                f"unknown hook {name!r} (hooks: {', '.join(HOOKS)}; "
                "a helper method needs a leading '_')"
            )
            continue
        params = list(inspect.signature(attr).parameters.values())
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if len(params) != 2 or any(p.kind not in plain for p in params):
            problems.append(f"hook {name}{inspect.signature(attr)}: must take exactly (self, ctx)")
        if inspect.iscoroutinefunction(attr) != spec.is_async:
            problems.append(
                f"hook {name}: must be 'async def'"
                if spec.is_async
                else f"hook {name}: must be a plain 'def' (it runs inline on the event loop)"
            )
        defined.add(name)
    if not defined and not problems:
        problems.append(f"defines no hook (one of {', '.join(HOOKS)})")
    if "prefetch" in defined and "rerank" not in defined:
        problems.append("hook prefetch needs a rerank hook to use what it fetched")
    return problems


def _loc(loc: tuple[int | str, ...]) -> str:
    """('ids', 0) -> 'ids[0]': the option's path below the plugin entry."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _option_problems(exc: ValidationError, where: str) -> list[str]:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        elif err["type"] == "missing":
            msg = "required"
        out.append(f"{where}.{_loc(loc)}: {msg}" if loc else f"{where}: {msg}")
    return out


def instantiate(cls: type, options: dict[str, Any], where: str, base_dir: Path | None) -> object:
    """The plugin object, its options validated; PluginLoadError names what is wrong."""
    options_cls = inspect.getattr_static(cls, "Options", None)
    try:
        if options_cls is None:
            if options:
                raise PluginLoadError(
                    [f"{where}.{key}: unknown option (this plugin takes none)" for key in options]
                )
            return cls()
        if not (isinstance(options_cls, type) and issubclass(options_cls, BaseModel)):
            raise PluginLoadError([f"{where}: Options must be a PluginOptions (pydantic) class"])
        try:
            validated = options_cls.model_validate(options, context={"base_dir": base_dir})
        except ValidationError as exc:
            raise PluginLoadError(_option_problems(exc, where)) from None
        return cls(validated)
    except PluginLoadError:
        raise
    except Exception as exc:  # __init__ refusing its options, or a wrong signature
        raise PluginLoadError([f"{where}: {exc}"]) from None


def load(
    spec: PluginSpec,
    where: str,
    base_dir: Path | None = None,
    *,
    implicit: bool = False,
    paths: Sequence[Path] = (),
) -> LoadedPlugin:
    try:
        cls = resolve(spec.use, paths)
    except ValueError as exc:
        raise PluginLoadError([f"{where}.use: {exc}"]) from None
    problems = check_hooks(cls)
    if problems:
        raise PluginLoadError([f"{where}: {spec.use}: {p}" for p in problems])
    instance = instantiate(cls, spec.options, where, base_dir)
    vary = getattr(instance, "vary", ())
    if isinstance(vary, str) or not all(isinstance(v, str) for v in vary):
        raise PluginLoadError([f"{where}: {spec.use}: vary must be a sequence of header names"])
    fields = getattr(instance, "item_fields", None)
    if fields is not None and (
        isinstance(fields, str) or not all(isinstance(f, str) for f in fields)
    ):
        raise PluginLoadError([f"{where}: {spec.use}: item_fields must be a sequence of keys"])
    hooks = {name: getattr(instance, name) for name in HOOKS if hasattr(instance, name)}
    return LoadedPlugin(
        name=spec.use,
        where=where,
        instance=instance,
        vary=tuple(vary),
        item_fields=None if fields is None else tuple(fields),
        implicit=implicit,
        **hooks,
    )
