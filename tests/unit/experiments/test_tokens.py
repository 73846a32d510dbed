"""X-Rankgate-Id tokens: they round-trip, and anything altered, foreign or old is refused
with the status the events endpoint answers."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from proxy.experiments.tokens import (
    MAX_TOKEN,
    SecretKeyError,
    TokenError,
    TokenSigner,
    key_from_env,
)
from proxy.feed.state import new_request_id

KEY = b"0123456789abcdef0123456789abcdef"
NOW = 1_764_480_000_000


def by_hand(key: bytes, payload: bytes) -> str:
    """A token made with the standard library alone: the format the signer must keep
    (base64url payload, ".", the first 16 bytes of its HMAC-SHA256, no padding)."""
    mac = hmac.new(key, payload, hashlib.sha256).digest()[:16]
    return (
        base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    )


def test_round_trip() -> None:
    signer = TokenSigner(KEY)
    rid = new_request_id()
    claims = signer.verify(signer.sign(rid, NOW, "home-feed", "beta.v2"), NOW + 5, 60)
    assert (claims.id, claims.ts, claims.route, claims.arm) == (rid, NOW, "home-feed", "beta.v2")


@pytest.mark.parametrize("key", [KEY, b"k" * 64, b"long key " * 20])
def test_tokens_are_what_the_format_says_whatever_the_key_length(key: bytes) -> None:
    """The pre-keyed HMAC gives the bytes ``hmac`` gives (a key longer than SHA-256's
    block is hashed first), so tokens issued by a process of the previous release verify
    in this one, and the other way round, during a rolling deploy."""
    payload = b'["0123456789abcdef01234567",1764480000000,"home-feed","beta.v2"]'
    expected = by_hand(key, payload)
    signer = TokenSigner(key)
    assert signer.sign("0123456789abcdef01234567", NOW, "home-feed", "beta.v2") == expected
    assert signer.verify(expected, NOW, 60).route == "home-feed"
    for arm in ("", "a", "ab", "abc"):  # every padding length of both parts
        token = signer.sign("0123456789abcdef01234567", NOW, "r", arm)
        body = token.split(".")[0]
        assert "=" not in token and "+" not in token and "/" not in token
        assert base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).endswith(
            f'"{arm}"]'.encode()
        )
        assert signer.verify(token, NOW, 60).arm == arm


def test_sign_now_dates_the_token() -> None:
    import time

    signer = TokenSigner(KEY)
    before = int(time.time() * 1000)
    token, ts = signer.sign_now(new_request_id(), "r", "a")
    assert before <= ts <= int(time.time() * 1000)
    assert signer.verify(token, ts, 60).ts == ts


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # the MAC
        lambda t: "e" + t[1:] if t[0] != "e" else "f" + t[1:],  # the payload
        lambda t: t.replace(".", ""),
        lambda t: t + ".x",
        lambda t: "!!!." + t.split(".")[1],
        lambda t: "x" * (MAX_TOKEN + 1),
        lambda t: 42,
    ],
)
def test_altered_tokens_are_401(mangle: object) -> None:
    signer = TokenSigner(KEY)
    token = signer.sign(new_request_id(), NOW, "r", "a")
    with pytest.raises(TokenError) as err:
        signer.verify(mangle(token), NOW, 60)  # type: ignore[operator]
    assert err.value.status == 401


def test_another_key_is_401_and_old_is_410() -> None:
    token = TokenSigner(KEY).sign(new_request_id(), NOW, "r", "a")
    with pytest.raises(TokenError) as err:
        TokenSigner(KEY[::-1]).verify(token, NOW, 60)
    assert err.value.status == 401
    with pytest.raises(TokenError) as err:
        TokenSigner(KEY).verify(token, NOW + 61_000, 60)
    assert err.value.status == 410


def test_a_signed_payload_of_the_wrong_shape_is_401() -> None:
    """Even a correctly signed payload must be ours (a key reused elsewhere)."""
    payload = b'["short", 1, "r", "a"]'
    token = by_hand(KEY, payload)
    with pytest.raises(TokenError, match="malformed"):
        TokenSigner(KEY).verify(token, NOW, 60)


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K1", "short")
    with pytest.raises(SecretKeyError, match="K1 has 5 bytes"):
        key_from_env("K1")
    monkeypatch.delenv("K1")
    with pytest.raises(SecretKeyError, match="K1 is not set"):
        key_from_env("K1")
    monkeypatch.setenv("K1", "x" * 16)
    assert key_from_env("K1") == b"x" * 16
    assert len({new_request_id() for _ in range(1000)}) == 1000
