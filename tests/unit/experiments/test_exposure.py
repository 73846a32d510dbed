"""The exposure record's unit: the user id, or the HMAC an app can compute itself."""

from __future__ import annotations

import hashlib
import hmac

from proxy.config.settings import Exposures
from proxy.experiments.exposure import ExposureLog
from proxy.experiments.sink import RecordQueue
from proxy.experiments.tokens import TokenSigner

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
