"""The exposure record's unit: the user id, or the HMAC an app can compute itself."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from proxy.config.settings import Exposures, Settings
from proxy.experiments.exposure import ExposureLog
from proxy.experiments.sink import RecordQueue
from proxy.experiments.tokens import TokenSigner
from proxy.serve.runtime import _keys

KEY = b"unit-key-of-32-bytes-for-the-app"


def log_with(unit_key: bytes | None) -> ExposureLog:
    cfg = Exposures(enabled=True, unit="hmac-sha256" if unit_key else "raw")
    return ExposureLog(cfg, RecordQueue(10, 10), TokenSigner(b"t" * 32), unit_key)


def test_units() -> None:
    assert log_with(None).unit("u1") == "u1"
    hashed = log_with(KEY)
    expected = hmac.new(KEY, b"u1", hashlib.sha256).hexdigest()  # what the app computes
    assert hashed.unit("u1") == expected and hashed.unit("u1") == expected  # cached
    assert hashed.unit("u2") != expected and hashed.unit(None) is None


def test_units_are_keyed_by_default_with_a_key_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No unit_key_env: the key is derived from the token key with its own label, so the
    unit never is the raw id, and knowing it tells nothing of the token key."""
    token_key = "the-token-key-of-at-least-32-byt"
    monkeypatch.setenv("RANKGATE_TOKEN_KEY", token_key)
    settings = Settings(origin={"url": "http://127.0.0.1:1"}, exposures={"enabled": True})
    assert settings.exposures.unit == "hmac-sha256"
    signer, unit_key = _keys(settings)
    assert (
        unit_key
        == hmac.new(token_key.encode(), b"rankgate exposure unit v1", hashlib.sha256).digest()
    )
    assert unit_key != token_key.encode()
    log = ExposureLog(settings.exposures, RecordQueue(10, 10), signer, unit_key)
    assert log.unit("42") == hmac.new(unit_key, b"42", hashlib.sha256).hexdigest()
    raw = Settings(origin={"url": "http://127.0.0.1:1"}, exposures={"enabled": True, "unit": "raw"})
    assert _keys(raw)[1] is None
    raw_log = ExposureLog(raw.exposures, RecordQueue(10, 10), signer, None)
    assert raw_log.unit("42") == "42" and raw_log.unit("u" * 300).startswith("sha256:")
