"""Compiling ``routes.yaml`` into the edge Worker's config (``config.json``).

The routes have been validated by the proxy's own loader first (``rankgate edge build``
runs ``build_snapshot``); this module only translates them, and lists every route
feature the Worker cannot honour, by its YAML path, so the build refuses them instead of
serving something else. What runs at the edge:

- matching by exact path, ``{name}`` segments or prefix, and methods;
- the user from ``user:`` sources (or the ``sources`` plugin), the items by dotted path
  (or the ``dotted`` plugin);
- arms by header, cookie, query and sticky percentage (the same salts and hash);
- the rules ``pin``, ``filter`` (field conditions), ``boost`` and ``annotate``.

Not at the edge: any other plugin (``jwt``, ``diversify``, Python classes), a filter on a
Redis set or a cookie, ``origin.host_header`` (a Worker's subrequest has its URL's
host), and a ``{bucket}`` in ``embeddings.item_key`` (Workers KV has no slots): these
refuse the build. Left out with a warning (``dropped``), as they change what is recorded,
never what a user is served: exposure records and the ``X-Rankgate-Id`` header
(``exposures``), and the events endpoint (``events``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from plugins.spec import PluginSpec
from proxy.config.routes import DEFAULT_ARM, NONE_MODEL, Route, RoutesFile, arm_name
from proxy.config.settings import Settings
from proxy.routing.arms import default_salt

FORMAT = 1
# Built-in plugins the Worker implements (edge/src/rules.js) or that compile to route
# settings (sources: user sources; dotted: items paths).
EDGE_RULES = ("pin", "filter", "boost", "annotate")
EDGE_PLUGINS = (*EDGE_RULES, "sources", "dotted")
_SEGMENT = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")  # proxy/routing/snapshot.py's {name}


@dataclass
class EdgeCompile:
    """The Worker's config and what it could not take (``path: message`` lines, for
    routes.yaml in ``problems`` and for rankgate.yaml in ``settings_problems``)."""

    config: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    settings_problems: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)  # model name -> module path
    # rankgate.yaml features the Worker leaves out (serving is the same without them):
    # one ``path: what happens instead`` line each, said at build time.
    dropped: list[str] = field(default_factory=list)


def _dotted(path: str) -> list[str]:
    return path.split(".") if path else []


def _match(route: Route) -> dict[str, Any]:
    match = route.match
    if match.prefix is not None:
        return {"prefix": match.prefix}
    assert match.path is not None
    parts = _SEGMENT.split(match.path)
    return {"exact": match.path} if len(parts) == 1 else {"segments": parts}


def _sources(values: tuple[str, ...] | list[str]) -> list[list[str]]:
    return [list(s.split(":", 1)) for s in values]


def _condition(options: dict[str, Any]) -> list[Any] | None:
    """plugins/fields.py FieldMatch: ``in`` values, ``equals`` as one value, else truthy."""
    if options.get("in") is not None:
        return list(options["in"])
    if "equals" in options:
        return [options["equals"]]
    return None


class _RouteCompiler:
    def __init__(self, route: Route, where: str) -> None:
        self.route = route
        self.where = where
        self.problems: list[str] = []
        self.user_plugins: list[list[str]] | None = None  # sources plugins, in order
        self.plugin_vary: list[str] = []
        self.items = route.items
        self.item_id = route.item_id
        self.rules: list[dict[str, Any]] = []

    def plugin(self, j: int, spec: PluginSpec) -> None:
        at = f"{self.where}.plugins[{j}]"
        use, options = spec.use, spec.options
        if use not in EDGE_PLUGINS:
            self.problems.append(
                f"{at}.use: plugin {use!r} cannot run at the edge (the Worker runs "
                f"{', '.join(EDGE_PLUGINS)}; other plugins are Python code)"
            )
            return
        if use == "sources":
            sources = _sources(options["from"])
            self.user_plugins = [*(self.user_plugins or []), *sources]
            # plugins/builtin/sources.py: the headers it reads (a query parameter is in the URL).
            self.plugin_vary += [
                "Cookie" if kind == "cookie" else name for kind, name in sources if kind != "query"
            ]
        elif use == "dotted":
            self.items = options.get("items", "items")
            self.item_id = options.get("item_id", "id")
        elif use in ("pin", "filter"):
            if use == "filter":
                for key, why in (
                    ("redis_set", "a Redis set filter needs the proxy's Redis"),
                    ("cookie", "a cookie filter is not implemented at the edge"),
                ):
                    if options.get(key) is not None:
                        self.problems.append(f"{at}.{key}: cannot run at the edge ({why})")
                if options.get("field") is None:
                    return
            self.rules.append(
                {"use": use, "field": _dotted(options["field"]), "values": _condition(options)}
            )
        elif use == "boost":
            self.rules.append(
                {
                    "use": "boost",
                    "field": _dotted(options["field"]),
                    "weight": float(options["weight"]),
                    "missing": float(options.get("missing", 0.0)),
                }
            )
        else:  # annotate
            self.rules.append(
                {
                    "use": "annotate",
                    "key": options.get("field", "_score"),
                    "round": int(options.get("round", 4)),
                }
            )

    def refuse_proxy_only(self, exp: Any, at: str) -> None:
        """An experiment's features that need the proxy's logs or live counts."""
        if exp.interleave is not None:
            self.problems.append(
                f"{at}.interleave: interleaved arms do not run at the edge; remove it to build"
            )
        if exp.shadow is not None:
            self.problems.append(f"{at}.shadow: shadow scoring does not run at the edge")
        for what in ("bandit", "guardrails"):  # both act on the proxy's live counts
            if getattr(exp, what) is not None:
                self.problems.append(f"{at}.{what}: does not run at the edge; remove it")

    def compile(self) -> dict[str, Any]:
        route = self.route
        for j, spec in enumerate(route.plugins):
            self.plugin(j, spec)
        sources = self.user_plugins if self.user_plugins is not None else _sources(route.user)
        experiments = []
        vary: list[str] = []
        if self.user_plugins is None:
            # proxy/routing/snapshot.py: what can choose the body, and nothing else.
            for kind, name in sources:
                if kind == "cookie":
                    vary.append("Cookie")
                elif kind == "header":
                    vary.append(name)
        if route.shadow is not None:
            self.problems.append(
                f"{self.where}.shadow: shadow scoring does not run at the edge (it needs the "
                "proxy's exposure log); remove it to build"
            )
        if route.guardrails is not None:
            self.problems.append(f"{self.where}.guardrails: does not run at the edge; remove it")
        for index, exp in enumerate(route.experiments):
            arm = arm_name(index, exp)
            when = exp.when
            at = f"{self.where}.experiments[{index}]"
            self.refuse_proxy_only(exp, at)
            salt = None
            if when.percent is not None:
                salt = when.salt if when.salt is not None else default_salt(route.name, arm)
            experiments.append(
                {
                    "arm": arm,
                    "model": exp.label,
                    "header": when.header,
                    "cookie": when.cookie,
                    "query": when.query,
                    "percent": when.percent,
                    "salt": salt,
                }
            )
            vary.extend((when.header or {}).keys())
            if when.cookie:
                vary.append("Cookie")
        vary.extend(self.plugin_vary)
        return {
            "name": route.name,
            "match": _match(route),
            "methods": list(route.match.methods),
            "items": _dotted(self.items),
            "item_id": _dotted(self.item_id),
            "user": sources,
            "budget_ms": route.budget_ms,
            "default": {"arm": DEFAULT_ARM, "model": route.model},
            "experiments": experiments,
            "vary": list(dict.fromkeys(vary)),
            "rules": self.rules,
        }


def dropped_features(settings: Settings) -> list[str]:
    """What the config turns on that the Worker does not do, one line per feature."""
    dropped = []
    if settings.exposures.enabled:
        dropped.append(
            "exposures.enabled: the Worker writes no exposure records and sends no "
            "X-Rankgate-Id header: `rankgate experiments report` sees none of its traffic"
        )
    if settings.events.enabled:
        dropped.append(
            f"events.enabled: the Worker does not take POST {settings.events.path}: "
            "clicks sent there reach the origin, unrecorded"
        )
    return dropped


def compile_edge(settings: Settings, routes: RoutesFile, source: dict[str, Any]) -> EdgeCompile:
    """The Worker's config for validated routes; ``problems`` lists what cannot run."""
    out = EdgeCompile()
    if settings.origin.host_header is not None:
        out.settings_problems.append(
            "origin.host_header: cannot be honoured at the edge (a Worker's subrequest "
            "carries its URL's host); remove it to build"
        )
    if "{bucket}" in settings.embeddings.item_key:
        out.settings_problems.append(
            "embeddings.item_key: {bucket} spreads keys over a Redis Cluster's slots; Workers "
            "KV has none and the Worker does not compute it: build the edge from a config "
            "whose item_key has no {bucket}"
        )
    out.dropped = dropped_features(settings)
    compiled = []
    for i, route in enumerate(routes.routes):
        compiler = _RouteCompiler(route, f"routes[{i}]")
        compiled.append(compiler.compile())
        out.problems.extend(compiler.problems)
    # Only the models the routes name are bundled; one module per distinct file name.
    named = {
        m
        for r in compiled
        for m in [r["default"]["model"], *(e["model"] for e in r["experiments"])]
    }
    models = {}
    for name in routes.models:
        if name in named and name != NONE_MODEL:
            out.models[name] = f"models/{name}.onnx"
            models[name] = {"module": out.models[name]}
    emb = settings.embeddings
    out.config = {
        "format": FORMAT,
        "source": source,
        "embeddings": {
            "dim": emb.dim,
            "user_key": emb.user_key,
            "item_key": emb.item_key,
            "item_cache": {
                "max_items": emb.item_cache.max_items,
                "ttl_s": emb.item_cache.ttl_s,
                "missing_ttl_s": emb.item_cache.missing_ttl_s,
            },
        },
        "feed": {"max_body_bytes": settings.feed.max_body_bytes},
        "models": models,
        "routes": compiled,
    }
    return out
