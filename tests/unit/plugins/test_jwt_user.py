"""The jwt user plugin: only a verified claim picks a user."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plugins.registry import PluginLoadError
from plugins.run import LoadedPlugin, RoutePlugins
from plugins.testing import context, load

SECRET = "s3cret-" * 10  # 70 bytes: enough for HS256..HS512 (RFC 7518 3.2)
OTHER = "another-" * 9


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def token(key: Any, alg: str = "HS256", ttl: float = 60, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": "u1", "exp": int(time.time() + ttl), **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=alg)


def user(plugin: LoadedPlugin, headers: dict[str, str] | None = None, **kw: Any) -> str | None:
    return RoutePlugins(user=(plugin,)).resolve_user(context([], headers=headers, **kw))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hmac_token(payload: dict[str, Any], key: str) -> str:
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(payload).encode())
    mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def test_hs256_good_token() -> None:
    plugin = load("jwt", algorithm="HS256", secret=SECRET)
    assert user(plugin, bearer(token(SECRET))) == "u1"
    assert plugin.vary == ("Authorization",)


def test_hs256_expired_badly_signed_missing() -> None:
    plugin = load("jwt", secret=SECRET)
    assert user(plugin, bearer(token(SECRET, ttl=-10))) is None  # expired
    assert user(plugin, bearer(token(OTHER))) is None  # another key
    assert user(plugin, {}) is None  # missing
    assert user(plugin, {"Authorization": "Bearer "}) is None
    assert user(plugin, {"Authorization": "Bearer not.a.jwt"}) is None
    tampered = token(SECRET).split(".")
    body = json.loads(base64.urlsafe_b64decode(tampered[1] + "=="))
    body["sub"] = "victim"
    tampered[1] = b64(json.dumps(body).encode())
    assert user(plugin, bearer(".".join(tampered))) is None  # claim changed, signature kept


def test_alg_none_and_other_algorithms_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    hs = load("jwt", secret=SECRET)
    unsigned = jwt.encode({"sub": "victim", "exp": int(time.time() + 60)}, None, algorithm="none")
    assert user(hs, bearer(unsigned)) is None
    assert user(hs, bearer(token(SECRET, alg="HS512"))) is None  # only the configured alg
    rs = load("jwt", algorithm="RS256", public_key=public_pem(rsa_key))
    # Algorithm confusion: an HS256 token "signed" with the RSA public key as secret
    # (built by hand: PyJWT itself refuses to sign so).
    confused = hmac_token({"sub": "victim", "exp": int(time.time() + 60)}, public_pem(rsa_key))
    assert user(rs, bearer(confused)) is None
    assert user(rs, bearer(unsigned)) is None


def test_rs256_good_expired_and_other_key(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "auth.pem").write_text(public_pem(rsa_key))
    # key_file is relative to routes.yaml (base_dir).
    plugin = load("jwt", base_dir=tmp_path, algorithm="RS256", key_file="keys/auth.pem")
    assert user(plugin, bearer(token(rsa_key, "RS256"))) == "u1"
    assert user(plugin, bearer(token(rsa_key, "RS256", ttl=-5))) is None
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert user(plugin, bearer(token(other, "RS256"))) is None


def test_claim_cookie_audience_issuer() -> None:
    plugin = load(
        "jwt", secret=SECRET, claim="uid", cookie="session", audience="feed", issuer="auth"
    )
    assert plugin.vary == ("Cookie",)
    good = token(SECRET, uid=42, aud="feed", iss="auth")
    assert user(plugin, cookies={"session": good}) == "42"  # integer claims become text
    assert user(plugin, bearer(good)) is None  # the cookie is the configured source
    assert user(plugin, cookies={"session": token(SECRET, uid="a", aud="x", iss="auth")}) is None
    assert user(plugin, cookies={"session": token(SECRET, uid="a", aud="feed", iss="x")}) is None
    assert user(plugin, cookies={"session": token(SECRET, aud="feed", iss="auth")}) is None


def test_exp_required_by_default() -> None:
    forever = jwt.encode({"sub": "u1"}, SECRET, algorithm="HS256")
    assert user(load("jwt", secret=SECRET), bearer(forever)) is None
    assert user(load("jwt", secret=SECRET, require_exp=False), bearer(forever)) == "u1"


def test_custom_header_without_bearer_and_leeway() -> None:
    plugin = load("jwt", secret=SECRET, header="X-Token", leeway_s=30)
    assert user(plugin, {"X-Token": token(SECRET, ttl=-5)}) == "u1"  # within the leeway


def test_verified_tokens_are_cached_until_they_expire() -> None:
    plugin = load("jwt", secret=SECRET)
    tok = token(SECRET, ttl=1.5)
    assert user(plugin, bearer(tok)) == "u1"
    instance: Any = plugin.instance
    assert tok in instance._verified
    instance._verified[tok] = ("u1", time.time() - 1)  # as if its exp has passed
    assert user(plugin, bearer(tok)) is None
    assert tok not in instance._verified


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_JWT_SECRET", SECRET)
    assert user(load("jwt", secret_env="TEST_JWT_SECRET"), bearer(token(SECRET))) == "u1"
    with pytest.raises(PluginLoadError, match="secret_env: NOT_SET_ANYWHERE is not set"):
        load("jwt", secret_env="NOT_SET_ANYWHERE")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "HS256 needs exactly one of secret or secret_env"),
        ({"secret": "short"}, "secret: HS256 needs at least 32 bytes"),
        ({"secret": SECRET, "public_key": "x"}, "needs exactly one of secret or secret_env"),
        ({"algorithm": "RS256", "secret": SECRET}, "RS256 needs exactly one of public_key"),
        ({"algorithm": "RS256", "public_key": "nope"}, "public_key: not a PEM public key"),
        ({"algorithm": "RS256", "key_file": "/nonexistent.pem"}, "key_file: cannot read"),
        ({"algorithm": "none", "secret": SECRET}, "plugin.algorithm: Input should be"),
        ({"secret": SECRET, "header": "A", "cookie": "b"}, "give 'header' or 'cookie'"),
        ({"secret": SECRET, "leeway_s": 1000}, "plugin.leeway_s: Input should be less"),
    ],
)
def test_bad_jwt_options_refused_at_load(options: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginLoadError) as err:
        load("jwt", **options)
    assert message in str(err.value)


def test_non_rsa_and_small_rsa_keys_refused() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(PluginLoadError, match="needs an RSA public key"):
        load("jwt", algorithm="RS256", public_key=ec_pem)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(PluginLoadError, match="under 2048 bits"):
        load("jwt", algorithm="RS256", public_key=public_pem(small))
