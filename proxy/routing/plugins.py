"""A route's plugins, loaded and sorted by kind.

The route's own ``user:`` and ``items:``/``item_id:`` compile into the built-in
``sources`` and ``dotted`` plugins (marked implicit, so the runner takes its fast path
for them); ``plugins:`` entries are loaded by the registry. Every problem is a line
with its YAML path, all reported at once.
"""

from __future__ import annotations

from pathlib import Path

from plugins.registry import PluginLoadError, load
from plugins.run import LoadedPlugin, RoutePlugins
from plugins.spec import PluginSpec
from proxy.config.routes import Route


def _implicit_user(route: Route, where: str) -> LoadedPlugin:
    spec = PluginSpec.model_validate({"use": "sources", "from": list(route.user)})
    return load(spec, f"{where}.user", implicit=True)


def _implicit_items(route: Route, where: str) -> LoadedPlugin:
    spec = PluginSpec(use="dotted", items=route.items, item_id=route.item_id)
    return load(spec, f"{where}.items", implicit=True)


def compile_plugins(
    route: Route,
    where: str,
    base_dir: Path | None = None,
    plugin_paths: tuple[Path, ...] = (),
) -> RoutePlugins:
    """Raises PluginLoadError (lines with YAML paths under ``where``). ``plugin_paths``:
    the directories rankgate.yaml names (``plugins.paths``) for ``use: module:Class``."""
    user: list[LoadedPlugin] = []
    rules: list[LoadedPlugin] = []
    items: LoadedPlugin | None = None
    problems: list[str] = []
    for j, spec in enumerate(route.plugins):
        at = f"{where}.plugins[{j}]"
        try:
            plugin = load(spec, at, base_dir, paths=plugin_paths)
        except PluginLoadError as exc:
            problems.extend(exc.problems)
            continue
        if plugin.resolve_user is not None:
            user.append(plugin)
        if plugin.find_items is not None:
            if items is not None:
                problems.append(f"{at}: a route has one items plugin ({items.where} is one)")
            items = plugin
        if plugin.rerank is not None:
            rules.append(plugin)
    problems.extend(_last_rule_problems(rules))
    written = route.model_fields_set
    if user and "user" in written:
        # Mixing them silently would let an unverified cookie stand in for a JWT.
        problems.append(
            f"{where}.user: the route takes its user from its plugins "
            f"({', '.join(p.name for p in user)}); to also accept these sources, list "
            "{use: sources, from: [...]} among the plugins instead"
        )
    if items is not None and written & {"items", "item_id"}:
        problems.append(f"{where}.items: the route finds its items with plugin {items.name}")
    if problems:
        raise PluginLoadError(problems)
    if not user:
        user.append(_implicit_user(route, where))
    if items is None:
        items = _implicit_items(route, where)
    vary = tuple(dict.fromkeys(v for p in (*user, items, *rules) for v in p.vary))
    return RoutePlugins(user=tuple(user), items=items, rules=tuple(rules), vary=vary)


def _last_rule_problems(rules: list[LoadedPlugin]) -> list[str]:
    """A rule that writes the final scores into the items (``_last_rule``, e.g.
    annotate) must come after every rule that could still change them."""
    others = [k for k, p in enumerate(rules) if not getattr(p.instance, "_last_rule", False)]
    if not others:
        return []
    after = rules[others[-1]]
    return [
        f"{p.where}: {p.name} writes the final scores into the items, so it must come "
        f"after every other rules plugin ({after.name} at {after.where} follows it)"
        for p in rules[: others[-1]]
        if getattr(p.instance, "_last_rule", False)
    ]
