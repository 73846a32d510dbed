"""``X-Rankgate-Id``: a signed token that names one feed response, for clicks to come back.

    token = base64url(payload) "." base64url(HMAC-SHA256(key, payload)[:16])
    payload = JSON ["<request id>", <ms>, "<route>", "<arm>"]

The app treats it as opaque: it sends it back with an event, and rankgate verifies the
signature (constant time) and the age before it takes the event. A key comes from an
environment variable, so every process of a fleet (and a restart) verifies the others'.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass

import orjson

MIN_KEY_BYTES = 16
MAX_TOKEN = 512  # longer is not one of ours: refused before any work
_MAC_BYTES = 16
_ID = re.compile(r"^[0-9a-f]{24}$")


class SecretKeyError(Exception):
    """The signing key is missing or too short (a configuration problem)."""


class TokenError(Exception):
    """A token refused: ``status`` 401 (malformed or forged) or 410 (too old)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Claims:
    id: str
    ts: int  # ms
    route: str
    arm: str


# base64url: the standard alphabet with - and _ for + and / (padding is then dropped).
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_from_env(name: str) -> bytes:
    value = os.environ.get(name, "")
    if len(value.encode()) < MIN_KEY_BYTES:
        state = "is not set" if not value else f"has {len(value.encode())} bytes"
        raise SecretKeyError(
            f"environment variable {name} {state}: it must hold a secret key of at least "
            f"{MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        )
    return value.encode()


def derive_key(key: bytes, label: str) -> bytes:
    """A key of its own for another use of the token key (units, the access log's user
    hash): knowing one derived key tells nothing of the token key or the others."""
    return hmac.new(key, f"rankgate {label}".encode(), hashlib.sha256).digest()


UNIT_LABEL = "exposure unit v1"
USER_HASH_LABEL = "access-log user v1"


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise SecretKeyError(f"a token key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key
        # Keyed once and copied per token: ``hmac.new`` per token would key it each time.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def derive(self, label: str) -> bytes:
        return derive_key(self._key, label)

    def _mac(self, payload: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(payload)
        return mac.digest()[:_MAC_BYTES]

    def sign(self, request_id: str, ts_ms: int, route: str, arm: str) -> str:
        return self._token(orjson.dumps([request_id, ts_ms, route, arm]))

    def sign_now(self, request_id: str, route: str, arm: str) -> tuple[str, int]:
        """A token issued now, and its time (ms since the epoch)."""
        ts_ms = time.time_ns() // 1_000_000
        return self._token(orjson.dumps([request_id, ts_ms, route, arm])), ts_ms

    def _token(self, payload: bytes) -> str:
        both = (
            binascii.b2a_base64(payload, newline=False)
            + b"."
            + binascii.b2a_base64(self._mac(payload), newline=False)
        )
        return both.translate(_URLSAFE, b"=").decode("ascii")

    def verify(self, token: object, now_ms: int, max_age_s: float) -> Claims:
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN or token.count(".") != 1:
            raise TokenError(401, "malformed token")
        body, mac = token.split(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            raise TokenError(401, "malformed token") from None
        if not hmac.compare_digest(given, self._mac(payload)):
            raise TokenError(401, "token signature does not match")
        try:
            request_id, ts, route, arm = orjson.loads(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            raise TokenError(401, "malformed token") from None
        if not (
            isinstance(request_id, str)
            and _ID.match(request_id)
            and isinstance(ts, int)
            and isinstance(route, str)
            and isinstance(arm, str)
        ):
            raise TokenError(401, "malformed token")
        if now_ms - ts > max_age_s * 1000:
            raise TokenError(410, f"token is older than events.max_age_s ({max_age_s:g} s)")
        return Claims(request_id, ts, route, arm)
