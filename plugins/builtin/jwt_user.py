"""Built-in user plugin ``jwt``: the user id is a claim of a signed JSON Web Token.

The signature is verified with the configured key and algorithm only (a token's own
``alg`` header cannot pick another one, so ``none`` and HS/RS confusion are refused),
and ``exp`` is required by default. A token that is missing, malformed, expired, not yet
valid, for another audience/issuer, or badly signed resolves to no user: the origin's
order, never someone else's personalization.

    plugins:
      - {use: jwt, algorithm: HS256, secret_env: RANKGATE_JWT_SECRET}
      - {use: jwt, algorithm: RS256, key_file: keys/auth.pub.pem, claim: uid,
         cookie: session, audience: feed}

Verified tokens are remembered (bounded) until their ``exp``, so a user's repeated
requests cost a dict lookup instead of a signature check.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import Field, ValidationInfo, field_validator, model_validator

from plugins.context import FeedContext
from plugins.hooks import PluginOptions

CACHE_SIZE = 4096
# RFC 7518 3.2: an HMAC key at least as long as the hash output.
_MIN_SECRET = {"HS256": 32, "HS384": 48, "HS512": 64}


class JwtUser:
    class Options(PluginOptions):
        algorithm: Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512"] = "HS256"
        secret: str | None = None  # HS*: the shared secret itself ...
        secret_env: str | None = None  # ... or the environment variable that holds it
        public_key: str | None = None  # RS*: the PEM text ...
        key_file: str | None = None  # ... or a PEM file (relative to routes.yaml)
        claim: str = "sub"
        header: str | None = None  # default Authorization ("Bearer " is stripped)
        cookie: str | None = None
        audience: str | None = None  # required when tokens carry "aud"
        issuer: str | None = None
        leeway_s: Annotated[float, Field(ge=0, le=300)] = 0.0
        require_exp: bool = True

        @field_validator("key_file")
        @classmethod
        def _relative_to_routes(cls, value: str | None, info: ValidationInfo) -> str | None:
            base = (info.context or {}).get("base_dir")
            if value is not None and base is not None:
                return str((Path(base) / value).resolve())
            return value

        @model_validator(mode="after")
        def _one_key(self) -> JwtUser.Options:
            hmac = self.algorithm.startswith("HS")
            given = [
                k
                for k in ("secret", "secret_env", "public_key", "key_file")
                if getattr(self, k) is not None
            ]
            allowed = ("secret", "secret_env") if hmac else ("public_key", "key_file")
            if len(given) != 1 or given[0] not in allowed:
                raise ValueError(
                    f"{self.algorithm} needs exactly one of {allowed[0]} or {allowed[1]}"
                    + (f" (got {', '.join(given)})" if given else "")
                )
            if self.header is not None and self.cookie is not None:
                raise ValueError("give 'header' or 'cookie', not both")
            return self

    def __init__(self, options: Options) -> None:
        self.options = options
        self.algorithm = options.algorithm
        self.key: str | RSAPublicKey = self._key(options)
        self.cookie = options.cookie
        self.header = None if options.cookie else (options.header or "Authorization")
        self.vary = (self.header,) if self.header else ("Cookie",)
        self.require = ["exp"] if options.require_exp else []
        self._verified: dict[str, tuple[str, float | None]] = {}

    @staticmethod
    def _key(options: Options) -> str | RSAPublicKey:
        if options.algorithm.startswith("HS"):
            if options.secret_env is not None:
                secret = os.environ.get(options.secret_env)
                if not secret:
                    raise ValueError(f"secret_env: {options.secret_env} is not set")
            else:
                assert options.secret is not None
                secret = options.secret
            if secret.lstrip().startswith("-----BEGIN"):
                raise ValueError("secret: looks like a PEM key; HS* takes a shared secret")
            if len(secret.encode()) < _MIN_SECRET[options.algorithm]:
                raise ValueError(
                    f"secret: {options.algorithm} needs at least "
                    f"{_MIN_SECRET[options.algorithm]} bytes (RFC 7518 3.2)"
                )
            return secret
        if options.key_file is not None:
            try:
                pem = Path(options.key_file).read_bytes()
            except OSError as exc:
                raise ValueError(
                    f"key_file: cannot read {options.key_file}: {exc.strerror}"
                ) from None
            where = "key_file"
        else:
            assert options.public_key is not None
            pem, where = options.public_key.encode(), "public_key"
        try:
            key = load_pem_public_key(pem)
        except ValueError:
            raise ValueError(f"{where}: not a PEM public key") from None
        if not isinstance(key, RSAPublicKey):
            raise ValueError(f"{where}: {options.algorithm} needs an RSA public key")
        if key.key_size < 2048:
            raise ValueError(f"{where}: RSA keys under 2048 bits are refused")
        return key

    def _token(self, ctx: FeedContext) -> str | None:
        if self.cookie is not None:
            return ctx.view.cookies.get(self.cookie) or None
        assert self.header is not None
        value = ctx.view.headers.get(self.header)
        if not value:
            return None
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() == "bearer":
            return rest.strip() or None
        return value.strip()

    def resolve_user(self, ctx: FeedContext) -> str | None:
        token = self._token(ctx)
        if token is None:
            return None
        now = time.time()
        hit = self._verified.get(token)
        if hit is not None:
            user, exp = hit
            if exp is None or now <= exp + self.options.leeway_s:
                return user
            del self._verified[token]
            return None
        try:
            claims = jwt.decode(
                token,
                self.key,  # type: ignore[arg-type]
                algorithms=[self.algorithm],
                audience=self.options.audience,
                issuer=self.options.issuer,
                leeway=self.options.leeway_s,
                options={"require": self.require},
            )
        except jwt.PyJWTError:
            return None
        value = claims.get(self.options.claim)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value:
            return None
        exp = claims.get("exp")
        if len(self._verified) >= CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # oldest first
        self._verified[token] = (value, float(exp) if isinstance(exp, int | float) else None)
        return value
