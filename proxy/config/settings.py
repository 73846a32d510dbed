"""The static configuration (``rankgate.yaml``), read once at start.

Frozen pydantic models: a bad file fails at start with the YAML path of each problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from proxy.config import yamlload
from proxy.config.control import ModelLimits, Plugins, RoutesLimits, RoutesRedis
from proxy.config.experiments import Events, Exposures, Readout
from proxy.config.keys import check_template
from proxy.config.yamlload import ENV_NAME as _ENV
from proxy.config.yamlload import Strict, check_redis_url


def _http_url(value: str, example: str) -> str:
    """A field validator's body: an http(s) URL with a host, without its trailing slash."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a URL: {value!r} (want {example})")
    return value.rstrip("/")


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
        return _http_url(value, "http://host:port")


class Embedded(Strict):
    """The embedded Valkey (``redis.url`` absent): where it keeps its data, which port."""

    # Relative to the config file's directory. Holds the data (AOF), the server's
    # pidfile and log, and the port it was first given (so the address stays the same).
    dir: str = ".rankgate/valkey"
    # None: the port recorded in ``dir`` (first start: a free one from 16500 up).
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


class Redis(Strict):
    # No url: rankgate runs an embedded Valkey that keeps its data in embedded.dir.
    url: str | None = None
    timeout_ms: Annotated[float, Field(gt=0)] = 20.0
    max_connections: Annotated[int, Field(ge=1)] = 64
    embedded: Embedded | None = None
    # A Redis/Valkey Cluster (proxy/store/cluster.py)? null: ask the server at start.
    cluster: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_redis_url(value)

    @field_validator("embedded")
    @classmethod
    def _one_server(cls, value: Embedded | None, info: ValidationInfo) -> Embedded | None:
        if value is not None and info.data.get("url") is not None:
            raise ValueError("only without redis.url (which one should rankgate use?)")
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
    # "emb:item:{b{bucket}}:{id}" spreads items over item_buckets hash tags (proxy/config/keys.py).
    item_key: str = "emb:item:{id}"
    item_buckets: Annotated[int, Field(ge=1, le=16384)] = 16
    item_cache: ItemCache = ItemCache()

    @field_validator("user_key", "item_key")
    @classmethod
    def _template(cls, value: str, info: ValidationInfo) -> str:
        problem = check_template(value, buckets_allowed=info.field_name == "item_key")
        if problem:
            raise ValueError(problem)
        return value


class Feed(Strict):
    # Feeds larger than this are passed through, never buffered whole.
    max_body_bytes: Annotated[int, Field(ge=1)] = 8 * 1024 * 1024
    # Batches of at least this many items run in a thread so the event loop keeps serving.
    thread_min_items: Annotated[int, Field(ge=1)] = 2048
    # Decoded bodies of at least this many bytes are parsed, spliced and joined in a
    # re-rank process (docs/performance.md: ~2,000 items of the bench's shape).
    offload_min_bytes: Annotated[int, Field(ge=1)] = 256 * 1024
    # Re-rank processes, started at the first big feed; 0: every feed on the event loop.
    # One halved a pass-through request's p99 beside 10,000-item feeds, at the cost of
    # those feeds' throughput (docs/performance.md, bench/offload.py).
    offload_workers: Annotated[int, Field(ge=0, le=64)] = 1


class Admin(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9090
    # Bearer token for /admin/* (not /metrics, /healthz, /readyz), written here or read at
    # start from the environment variable token_env (a Kubernetes Secret); not both.
    token: str | None = None
    token_env: Annotated[str, Field(pattern=_ENV)] | None = None
    # False: Redis down leaves /readyz at 200 with the reason in the body, since the
    # proxy still serves (in origin order); failing readiness would pull every replica
    # out of the load balancer at once.
    readyz_requires_redis: bool = False


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    access_log: bool = True
    # Access logs carry HMAC-SHA256(key, salt + user id)[:16], never the id itself; the
    # key is derived from the value of user_hash_key_env (by default the token key), or
    # made at random for the run when that variable is not set (proxy/serve/logs.py).
    user_hash_salt: str = ""
    user_hash_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = (
        "RANKGATE_TOKEN_KEY"
    )


class Tracing(Strict):
    """OpenTelemetry traces over OTLP/HTTP (the ``otel`` extra); see
    docs/guides/tracing-and-explain.md. Off: nothing of OpenTelemetry is imported."""

    enabled: bool = False
    # The collector's OTLP/HTTP base URL; spans go to ENDPOINT/v1/traces (protobuf).
    endpoint: str = "http://127.0.0.1:4318"
    # Share of new traces kept; a request that carries a traceparent follows its
    # sampled flag instead (parent-based), so a trace is kept or dropped whole.
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    service_name: Annotated[str, Field(min_length=1)] = "rankgate"
    # How often the batch processor sends what it has (OTEL_BSP_SCHEDULE_DELAY), and how
    # long one export may take (a collector that is down costs a dropped batch, not a stall).
    batch_delay_ms: Annotated[float, Field(gt=0)] = 5000.0
    timeout_s: Annotated[float, Field(gt=0)] = 5.0

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _http_url(value, "http://host:4318")


class Settings(Strict):
    listen: Listen = Listen()
    origin: Origin
    redis: Redis = Redis()
    embeddings: Embeddings = Embeddings()
    feed: Feed = Feed()
    admin: Admin = Admin()
    logging: Logging = Logging()
    exposures: Exposures = Exposures()
    events: Events = Events()
    tracing: Tracing = Tracing()
    readout: Readout = Readout()
    routes: str = "routes.yaml"
    # Reload routes.yaml (and the models it names) when their content changes on disk.
    routes_watch: bool = True
    # redis: routes pushed with `rankgate routes push` (proxy/routing/sources.py); the file
    # above then serves only until Redis first answers with a version.
    routes_source: Literal["file", "redis"] = "file"
    routes_redis: RoutesRedis = RoutesRedis()
    routes_limits: RoutesLimits = RoutesLimits()
    models: ModelLimits = ModelLimits()
    plugins: Plugins = Plugins()
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
        if self.events.enabled and not self.exposures.enabled:
            raise ValueError(
                "events.enabled: needs exposures.enabled (events name the exposures they follow)"
            )
        if self.redis.cluster and self.redis.url is None:
            raise ValueError("redis.cluster: needs redis.url (the embedded Valkey is one node)")
        if self.redis.cluster and urlsplit(self.redis.url or "").scheme == "unix":
            raise ValueError("redis.cluster: a cluster is reached over TCP, not a unix socket")
        if self.admin.token is not None and self.admin.token_env is not None:
            raise ValueError("admin.token_env: give admin.token or admin.token_env, not both")
        if self.routes_source == "redis" and self.redis.url is None:
            raise ValueError("routes_source: redis needs redis.url (shared by the fleet)")
        return self

    @property
    def exposures_dir(self) -> Path:
        return Path(os.path.abspath(self.base_dir / self.exposures.path))

    @property
    def embedded_dir(self) -> Path:
        """Where the embedded Valkey keeps its data (used when redis.url is absent)."""
        embedded = self.redis.embedded or Embedded()
        return Path(os.path.abspath(self.base_dir / embedded.dir))

    @property
    def plugin_paths(self) -> tuple[Path, ...]:
        return tuple(Path(os.path.abspath(self.base_dir / p)) for p in self.plugins.paths)

    @property
    def routes_path(self) -> Path:
        # Absolute but symlinks kept: a ConfigMap's routes.yaml -> ..data/routes.yaml must
        # be re-resolved at each reload, not pinned to today's ..2026_xx directory.
        return Path(os.path.abspath(self.base_dir / self.routes))


def load_settings(path: str | Path) -> Settings:
    """Read and validate ``rankgate.yaml``; raises yamlload.ConfigError."""
    path = Path(path)
    data = yamlload.read_yaml(path)
    if isinstance(data, dict) and "base_dir" in data:
        raise yamlload.ConfigError(str(path), ["base_dir: unknown key"])
    if isinstance(data, dict):
        data = {**data, "base_dir": Path(os.path.abspath(path)).parent}
    return yamlload.validate(Settings, data, str(path))
