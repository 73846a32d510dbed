"""The static configuration (``rankgate.yaml``), read once at start.

Frozen pydantic models: a bad file fails at start with the YAML path of each problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy import yamlconf


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(Strict):
    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # Per worker; a connection past it gets 503 with Retry-After (nginx: worker_connections).
    max_connections: Annotated[int, Field(ge=1)] = 1024
    # Every wait a client controls is bounded; the defaults are nginx's.
    # A request's header section must arrive within this (client_header_timeout) -> 408.
    header_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # Longest pause between two reads of a request body (client_body_timeout) -> 408.
    body_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # Longest a client may leave our writes unread (send_timeout) -> connection closed.
    send_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # An idle keep-alive connection is closed after this (keepalive_timeout).
    keepalive_timeout_s: Annotated[float, Field(gt=0)] = 75.0


class Origin(Strict):
    url: str
    connect_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    # Longest wait for the response headers, and between two body chunks after them.
    timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # Host header sent upstream: None = the origin's own host; "preserve" = the client's.
    host_header: str | None = None
    # Per worker. Keep it at least listen.max_connections: a client holds at most one
    # origin connection, so then slow clients can never fill the pool.
    max_connections: Annotated[int, Field(ge=1)] = 1024
    # Longest wait for a free origin connection when all are busy -> 503 with Retry-After
    # (HAProxy's timeout queue).
    pool_timeout_s: Annotated[float, Field(gt=0)] = 5.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a URL: {value!r} (want http://host:port)")
        return value.rstrip("/")


class Redis(Strict):
    # No url: rankgate starts an embedded Valkey (fine for a demo, not for production).
    url: str | None = None
    timeout_ms: Annotated[float, Field(gt=0)] = 20.0
    max_connections: Annotated[int, Field(ge=1)] = 64

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: {value!r} (want redis://host:port/db)")
        return value


class ItemCache(Strict):
    max_items: Annotated[int, Field(ge=0)] = 100_000
    ttl_s: Annotated[float, Field(ge=0)] = 60.0
    # Ids with no vector in Redis are remembered this long, so they cost no round trip.
    missing_ttl_s: Annotated[float, Field(ge=0)] = 5.0
    # Whole id lists (feed pages) kept assembled: the same page serves many users. They
    # hold at most max_items vectors together, and share max_bytes with the items.
    max_lists: Annotated[int, Field(ge=0)] = 1024
    # Per worker: item vectors and lists together, ids and per-entry overhead included.
    max_bytes: Annotated[int, Field(ge=0)] = 128 * 1024 * 1024


class Embeddings(Strict):
    dim: Annotated[int, Field(ge=1, le=65536)] = 32
    user_key: str = "emb:user:{id}"
    item_key: str = "emb:item:{id}"
    item_cache: ItemCache = ItemCache()

    @field_validator("user_key", "item_key")
    @classmethod
    def _template(cls, value: str) -> str:
        if value.count("{id}") != 1:
            raise ValueError(f"must contain '{{id}}' exactly once: {value!r}")
        return value


class Feed(Strict):
    # Feeds larger than this are passed through, never buffered whole.
    max_body_bytes: Annotated[int, Field(ge=1)] = 8 * 1024 * 1024
    # Batches of at least this many items run in a thread so the event loop keeps serving.
    thread_min_items: Annotated[int, Field(ge=1)] = 2048


class Admin(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9090
    # Bearer token for /admin/* (not /metrics, /healthz, /readyz).
    token: str | None = None
    # False: Redis down leaves /readyz at 200 with the reason in the body, since the
    # proxy still serves (in origin order); failing readiness would pull every replica
    # out of the load balancer at once.
    readyz_requires_redis: bool = False


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    access_log: bool = True
    # Access logs carry sha256(salt + user id)[:16], never the id itself.
    user_hash_salt: str = ""


class Settings(Strict):
    listen: Listen = Listen()
    origin: Origin
    redis: Redis = Redis()
    embeddings: Embeddings = Embeddings()
    feed: Feed = Feed()
    admin: Admin = Admin()
    logging: Logging = Logging()
    routes: str = "routes.yaml"
    # Reload routes.yaml (and the models it names) when their content changes on disk.
    routes_watch: bool = True
    # 0 = one worker process per CPU this process may use; 1 = serve in this process.
    workers: Annotated[int, Field(ge=0)] = 0
    shutdown_timeout_s: Annotated[float, Field(ge=0)] = 15.0
    # Directory of the file this came from; relative paths resolve against it.
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _ports(self) -> Settings:
        same_host = self.admin.host == self.listen.host or "0.0.0.0" in (
            self.admin.host,
            self.listen.host,
        )
        if same_host and self.admin.port == self.listen.port and self.admin.port != 0:
            raise ValueError("admin.port: must differ from listen.port (admin never shares it)")
        return self

    @property
    def routes_path(self) -> Path:
        # Absolute but symlinks kept: a ConfigMap's routes.yaml -> ..data/routes.yaml must
        # be re-resolved at each reload, not pinned to today's ..2026_xx directory.
        return Path(os.path.abspath(self.base_dir / self.routes))


def load_settings(path: str | Path) -> Settings:
    """Read and validate ``rankgate.yaml``; raises yamlconf.ConfigError."""
    path = Path(path)
    data = yamlconf.read_yaml(path)
    if isinstance(data, dict) and "base_dir" in data:
        raise yamlconf.ConfigError(str(path), ["base_dir: unknown key"])
    if isinstance(data, dict):
        data = {**data, "base_dir": Path(os.path.abspath(path)).parent}
    return yamlconf.validate(Settings, data, str(path))
