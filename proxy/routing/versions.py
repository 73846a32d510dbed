"""Routes kept in Redis for a whole fleet (``routes_source: redis``): the stored version,
the push, and the fleet's reports. Blocking redis-py calls on a ``redis.Redis`` or a
``redis.RedisCluster``: the command line uses them as they are, a serving process in a
thread (they are off the request path).

Layout (names from ``routes_redis`` in rankgate.yaml):

    key        hash  yaml (the routes file's bytes), sha256 (of those bytes), version
                     (1, 2, ... one per push), pushed_at (unix time), pushed_by, sig
                     (HMAC-SHA256 of all but yaml, under the fleet key: signing.py)
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
from proxy.routing import signing

# One atomic compare-and-set, so that two pushes never get one version: the pusher
# signs version N+1 having read N, and stores it only if N is still the stored version
# (else it reads again and signs the next number).
_PUSH = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version')) or 0
if current ~= tonumber(ARGV[6]) then
  return {current, 0}
end
redis.call('HSET', KEYS[1], 'yaml', ARGV[1], 'sha256', ARGV[2], 'pushed_at', ARGV[3],
           'pushed_by', ARGV[4], 'sig', ARGV[5], 'version', current + 1)
return {current + 1, 1}
"""
_PUSH_TRIES = 20


@dataclass(frozen=True)
class Head:
    """What identifies a stored routes version."""

    version: int
    sha256: str


@dataclass(frozen=True)
class StoredRoutes:
    head: Head
    raw: bytes  # empty when size is over the limit fetch() was given (never read)
    pushed_at: float
    pushed_by: str
    pushed_at_raw: str = ""  # as stored: part of the signed message
    signature: str | None = None
    size: int = 0

    @property
    def intact(self) -> bool:
        """The bytes are the ones the pusher hashed."""
        return hashlib.sha256(self.raw).hexdigest() == self.head.sha256

    def signed_message(self, key_name: str) -> bytes:
        return signing.message(
            key_name, self.head.version, self.head.sha256, self.pushed_at_raw, self.pushed_by
        )

    def signature_problem(self, key: bytes, key_name: str) -> str | None:
        return signing.signature_problem(key, self.signed_message(key_name), self.signature)


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def push(
    client: redis.Redis, cfg: RoutesRedis, raw: bytes, key: bytes, *, force: bool = False
) -> tuple[Head, bool]:
    """Sign ``raw`` as the next version with the fleet ``key``, store it and publish it;
    (head, False) when the stored version already has these bytes under a signature
    that verifies (nothing stored, nothing published)."""
    digest = hashlib.sha256(raw).hexdigest()
    script = client.register_script(_PUSH)
    by = who()
    for _ in range(_PUSH_TRIES):
        stored = fetch(client, cfg, max_bytes=0)  # the head and signature, not the bytes
        if (
            stored is not None
            and stored.head.sha256 == digest
            and stored.signature_problem(key, cfg.key) is None
            and not force
        ):
            return stored.head, False
        current = 0 if stored is None else max(stored.head.version, 0)
        at = repr(time.time())
        sig = signing.sign(key, signing.message(cfg.key, current + 1, digest, at, by))
        version, changed = script(keys=[cfg.key], args=[raw, digest, at, by, sig, str(current)])
        if changed:
            head = Head(int(version), digest)
            client.publish(cfg.channel, f"{head.version} {head.sha256}")
            return head, True
    raise redis.RedisError(f"{cfg.key}: {_PUSH_TRIES} concurrent pushes in a row; try again")


def _number(value: Any) -> int:
    """A stored version number; -1 for one that is not (written by hand: it will not
    verify, and must not stop a process from polling and reporting)."""
    try:
        return int(value)
    except ValueError:
        return -1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def head(client: redis.Redis, cfg: RoutesRedis) -> Head | None:
    """The stored version and sha256 (one HMGET: the poll), or None when none is."""
    version, digest = client.hmget(cfg.key, ["version", "sha256"])
    if version is None or digest is None:
        return None
    return Head(_number(version), _text(digest))


def fetch(
    client: redis.Redis, cfg: RoutesRedis, max_bytes: int | None = None
) -> StoredRoutes | None:
    """The stored version; its bytes only when at most ``max_bytes`` long (the size is
    asked first, so an oversized version is never downloaded)."""
    pipe = client.pipeline(transaction=False)
    pipe.hmget(cfg.key, ["version", "sha256", "pushed_at", "pushed_by", "sig"])
    pipe.hstrlen(cfg.key, "yaml")
    (version, digest, pushed_at, pushed_by, sig), size = pipe.execute()
    if version is None or digest is None or not size:
        return None
    raw: Any = b""
    if max_bytes is None or size <= max_bytes:
        raw = client.hget(cfg.key, "yaml") or b""
    try:
        at = float(pushed_at or 0)
    except ValueError:
        at = 0.0
    return StoredRoutes(
        Head(_number(version), _text(digest)),
        raw if isinstance(raw, bytes) else str(raw).encode(),
        at,
        _text(pushed_by or ""),
        _text(pushed_at or ""),
        None if sig is None else _text(sig),
        int(size),
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
    from proxy.routing.limits import RoutesPolicy
    from proxy.routing.snapshot import build_snapshot_bytes

    base = settings.routes_path.parent
    policy = RoutesPolicy.from_settings(settings)
    snapshot = build_snapshot_bytes(raw, file, base, settings.embeddings.dim, 1, None, policy)
    routes = ", ".join(r.name for r in snapshot.routes) or "none"
    return (
        f"{file}: {len(snapshot.routes)} route(s) ({routes}), {len(snapshot.models)} "
        f"model(s), paths resolved against {base}"
    )
