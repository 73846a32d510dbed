"""rankgate.yaml's control-plane sections: routes kept in Redis for a fleet (signed), the
limits on what a routes version may name, and where plugins may come from."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from proxy.config.yamlload import ENV_NAME as _ENV
from proxy.config.yamlload import Strict


class RoutesRedis(Strict):
    """Where the fleet's routes live in Redis (routes_source: redis)."""

    key: str = "rankgate:routes"  # hash: yaml, sha256, version, pushed_at, pushed_by
    channel: str = "rankgate:routes"  # PUBLISH "VERSION SHA256" on each push
    fleet_key: str = "rankgate:routes:fleet"  # hash: process -> the version it serves
    # Pub/sub can lose messages (a reconnect, a proxy without pub/sub): poll this often.
    poll_s: Annotated[float, Field(gt=0, le=300)] = 3.0
    # A process that stopped reporting for this long is gone from `routes status`.
    fleet_ttl_s: Annotated[float, Field(gt=0)] = 15.0
    # false: poll only (twemproxy and Envoy's Redis proxy do not forward SUBSCRIBE).
    subscribe: bool = True
    # Versions are signed (HMAC-SHA256) with this environment variable's value: `routes
    # push` signs, every process refuses a version it cannot verify (docs/guides/fleet.md).
    key_env: Annotated[str, Field(pattern=_ENV)] = "RANKGATE_ROUTES_KEY"

    @model_validator(mode="after")
    def _ttl(self) -> RoutesRedis:
        if self.fleet_ttl_s < 2 * self.poll_s:
            raise ValueError("fleet_ttl_s: must be at least twice poll_s (one lost beat)")
        return self


class ModelLimits(Strict):
    """Bounds on the model files a routes version names (here, not in routes.yaml: a
    routes version must not be able to raise its own limits)."""

    max_bytes: Annotated[int, Field(ge=1)] = 512 * 1024 * 1024


class RoutesLimits(Strict):
    """Bounds on one routes version (a file or a push), checked before it is parsed."""

    max_bytes: Annotated[int, Field(ge=1)] = 1024 * 1024
    max_models: Annotated[int, Field(ge=1)] = 100
    max_routes: Annotated[int, Field(ge=1)] = 1000
    # A reload (hash, load and warm every new model) that takes longer is abandoned.
    reload_timeout_s: Annotated[float, Field(gt=0)] = 120.0


class Plugins(Strict):
    # Directories (relative to this file) whose modules `use: module:Class` may name.
    paths: tuple[str, ...] = ()
