"""Routes kept in Redis for a whole fleet (``routes_source: redis``): the stored version,
the push, and the fleet's reports. Blocking redis-py calls on a ``redis.Redis`` or a
``redis.RedisCluster``: the command line uses them as they are, a serving process in a
thread (they are off the request path).

Layout (names from ``routes_redis`` in rankgate.yaml):

    key        hash  yaml (the routes file's bytes), sha256 (of those bytes), version
                     (1, 2, ... one per push), pushed_at (unix time), pushed_by
    channel    PUBLISH "VERSION SHA256" after each push
    fleet_key  hash  one field per process ("host:pid") -> JSON of what it serves; each
                     entry carries its time and is dropped once older than fleet_ttl_s,
                     and the key expires with the last process
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis

from proxy.config.settings import RoutesRedis, Settings

# One atomic step, so that two pushes never get one version: bump the version and store
# the routes with it, unless they are what is stored already (then nothing changes).
_PUSH = """
local current = redis.call('HGET', KEYS[1], 'sha256')
if current == ARGV[2] and ARGV[5] ~= 'force' then
  return {tonumber(redis.call('HGET', KEYS[1], 'version')), 0}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'yaml', ARGV[1], 'sha256', ARGV[2], 'pushed_at', ARGV[3],
           'pushed_by', ARGV[4])
return {version, 1}
"""


@dataclass(frozen=True)
class Head:
    """What identifies a stored routes version."""

    version: int
    sha256: str


@dataclass(frozen=True)
class StoredRoutes:
    head: Head
    raw: bytes
    pushed_at: float
    pushed_by: str

    @property
    def intact(self) -> bool:
        """The bytes are the ones the pusher hashed."""
        return hashlib.sha256(self.raw).hexdigest() == self.head.sha256


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def push(
    client: redis.Redis, cfg: RoutesRedis, raw: bytes, *, force: bool = False
) -> tuple[Head, bool]:
    """Store ``raw`` as the next version and publish it; (head, False) when the stored
    version already has these bytes (nothing stored, nothing published)."""
    digest = hashlib.sha256(raw).hexdigest()
    script = client.register_script(_PUSH)
    version, changed = script(
        keys=[cfg.key],
        args=[raw, digest, repr(time.time()), who(), "force" if force else ""],
    )
    head = Head(int(version), digest)
    if changed:
        client.publish(cfg.channel, f"{head.version} {head.sha256}")
    return head, bool(changed)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def head(client: redis.Redis, cfg: RoutesRedis) -> Head | None:
    """The stored version and sha256 (one HMGET: the poll), or None when none is."""
    version, digest = client.hmget(cfg.key, ["version", "sha256"])
    if version is None or digest is None:
        return None
    return Head(int(version), _text(digest))


def fetch(client: redis.Redis, cfg: RoutesRedis) -> StoredRoutes | None:
    values = client.hmget(cfg.key, ["version", "sha256", "yaml", "pushed_at", "pushed_by"])
    version, digest, raw, pushed_at, pushed_by = values
    if version is None or digest is None or raw is None:
        return None
    return StoredRoutes(
        Head(int(version), _text(digest)),
        raw if isinstance(raw, bytes) else str(raw).encode(),
        float(pushed_at or 0),
        _text(pushed_by or ""),
    )


def member() -> str:
    """This process's field in the fleet hash (a pod's hostname is its name)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def report(client: redis.Redis, cfg: RoutesRedis, name: str, entry: dict[str, Any]) -> None:
    """Write what this process serves; the hash outlives the fleet by fleet_ttl_s."""
    data = orjson.dumps({**entry, "at": time.time()})
    pipe = client.pipeline(transaction=False)
    pipe.hset(cfg.fleet_key, name, data)
    pipe.expire(cfg.fleet_key, max(1, round(cfg.fleet_ttl_s)))
    pipe.execute()


def forget(client: redis.Redis, cfg: RoutesRedis, name: str) -> None:
    client.hdel(cfg.fleet_key, name)


def fleet(client: redis.Redis, cfg: RoutesRedis) -> list[dict[str, Any]]:
    """Every live process's report (name, version, ...), oldest name first; entries
    older than fleet_ttl_s are dropped from the hash on the way."""
    now = time.time()
    live: list[dict[str, Any]] = []
    stale: list[bytes] = []
    for name, data in client.hgetall(cfg.fleet_key).items():
        try:
            entry = orjson.loads(data)
        except orjson.JSONDecodeError:
            entry = {}
        if not isinstance(entry, dict) or now - float(entry.get("at", 0)) > cfg.fleet_ttl_s:
            stale.append(name)
            continue
        live.append({"process": _text(name), **entry, "age_s": round(now - entry["at"], 3)})
    if stale:
        client.hdel(cfg.fleet_key, *stale)
    return sorted(live, key=lambda e: e["process"])


def validate(settings: Settings, file: Path, raw: bytes) -> str:
    """What a reload would say about ``raw`` (raises ConfigError), as one line."""
    from proxy.routing.snapshot import build_snapshot_bytes

    base = settings.routes_path.parent
    snapshot = build_snapshot_bytes(raw, file, base, settings.embeddings.dim, 1, None)
    routes = ", ".join(r.name for r in snapshot.routes) or "none"
    return (
        f"{file}: {len(snapshot.routes)} route(s) ({routes}), {len(snapshot.models)} "
        f"model(s), paths resolved against {base}"
    )
