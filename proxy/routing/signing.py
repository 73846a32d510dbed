"""Signed routes versions (``routes_source: redis``): who may steer the fleet.

A sha256 proves the stored bytes are the ones hashed, not who stored them: anyone who can
write the Redis key could store routes with a matching sha256. So ``rankgate routes
push`` signs each version with HMAC-SHA256 under a fleet key from the environment
(``routes_redis.key_env``, RANKGATE_ROUTES_KEY by default), and every process verifies
the signature, in constant time, before it parses a byte of the routes. The signed
message binds the Redis key, the version number, the sha256 and who pushed when, so a
signature cannot be moved to other bytes, another number or another fleet's key.
"""

from __future__ import annotations

import hashlib
import hmac
import os

MIN_KEY_BYTES = 16


class RoutesKeyError(Exception):
    """The fleet key is missing or too short (a configuration problem)."""


def key_from_env(name: str) -> bytes:
    """The fleet key from environment variable ``name`` (at least 16 bytes)."""
    value = os.environ.get(name, "")
    if len(value.encode()) < MIN_KEY_BYTES:
        state = "is not set" if not value else f"is shorter than {MIN_KEY_BYTES} bytes"
        raise RoutesKeyError(
            f"{name} {state}: routes versions in Redis are signed with it (HMAC-SHA256), "
            f"so every process and `rankgate routes push` need the same key, e.g. "
            f"export {name}=$(openssl rand -hex 32)  (routes_redis.key_env names the variable)"
        )
    return value.encode()


def message(key_name: str, version: int, sha256: str, pushed_at: str, pushed_by: str) -> bytes:
    fields = ("rankgate-routes/1", key_name, str(version), sha256, pushed_at, pushed_by)
    return "\n".join(fields).encode()


def sign(key: bytes, msg: bytes) -> str:
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def signature_problem(key: bytes, msg: bytes, signature: str | None) -> str | None:
    """None when ``signature`` is this key's signature of ``msg``; else why not."""
    if not signature:
        return "unsigned: refused (push with `rankgate routes push`, which signs it)"
    if not hmac.compare_digest(sign(key, msg).encode(), signature.encode()):
        return "signature does not verify with this process's routes key: refused"
    return None
