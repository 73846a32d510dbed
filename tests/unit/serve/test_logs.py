"""Structured logs: one JSON access line per request on stdout (user ids hashed), the
application's logs on stderr in the same format; a text format for a terminal."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from proxy.config.settings import Logging
from proxy.experiments.tokens import USER_HASH_LABEL, derive_key
from proxy.outcome.record import RequestRecord
from proxy.serve.logs import (
    MAX_MEMO_USERS,
    AccessLog,
    JsonFormatter,
    TextFormatter,
    hash_user,
    setup_logging,
    user_hash_key,
)
from tests.support.common import (
    TEN_ITEMS_ROUTES,
    ProxyProcess,
    fetch,
    seed_ten_items,
    start_app,
    ten_item_origin,
    write_config,
)

USER = "alice-42"
TOKEN_KEY = "a-token-key-of-32-bytes-for-logs"
LOG_KEY = derive_key(TOKEN_KEY.encode(), USER_HASH_LABEL)
ACCESS_FIELDS = {
    "time",
    "level",
    "logger",
    "pid",
    "method",
    "path",
    "status",
    "route",
    "outcome",
    "reason",
    "plugin",
    "model",
    "arm",
    "user",
    "items",
    "scored",
    "bytes",
    "duration_ms",
    "timings_ms",
}


class Lines:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)


def record() -> RequestRecord:
    rec = RequestRecord("GET", "/feed")
    rec.status, rec.route, rec.outcome, rec.model, rec.arm = 200, "feed", "applied", "dot", "b"
    rec.user_id, rec.items, rec.scored, rec.bytes_out = USER, 10, 9, 1234
    rec.timings = {"origin": 0.002, "redis": 0.0005, "inference": 0.00003, "total": 0.0031}
    return rec


def test_access_line_json() -> None:
    sink = Lines()
    AccessLog("json", sink, user_key=LOG_KEY)(record())
    assert len(sink.data) == 1 and sink.data[0].endswith(b"\n")
    line = orjson.loads(sink.data[0])
    assert set(line) == ACCESS_FIELDS
    # Keyed: HMAC-SHA256 with a key derived from the token key, not a plain hash that
    # anyone can reverse for short or numeric ids by trying them all.
    assert line["user"] == hmac.new(LOG_KEY, USER.encode(), hashlib.sha256).hexdigest()[:16]
    assert line["user"] != hashlib.sha256(USER.encode()).hexdigest()[:16]
    assert USER.encode() not in sink.data[0]
    assert line["timings_ms"] == {"origin": 2.0, "redis": 0.5, "inference": 0.03, "total": 3.1}
    assert line["duration_ms"] == 3.1
    assert line["time"].endswith("Z") and line["time"][10] == "T"
    assert (line["route"], line["outcome"], line["items"], line["bytes"]) == (
        "feed",
        "applied",
        10,
        1234,
    )


def test_access_line_text_and_salt() -> None:
    sink = Lines()
    AccessLog("text", sink, user_salt="pepper", user_key=LOG_KEY)(record())
    text = sink.data[0].decode()
    assert "GET /feed 200 feed applied model=dot arm=b items=10 scored=9 bytes=1234" in text
    assert "3.10ms (origin 2.00, redis 0.50, inference 0.03)" in text
    assert hash_user(USER, LOG_KEY, "pepper") in text and hash_user(USER, LOG_KEY) not in text
    assert USER not in text


def test_user_hash_memo_is_bounded_in_bytes() -> None:
    """User ids come from clients: long ones are hashed every time, never kept."""
    log = AccessLog("json", Lines(), user_key=LOG_KEY)
    rec = record()
    for k in range(50):
        rec.user_id = f"{k}-" + "x" * 60_000  # a 60 KB header value
        log(rec)
    assert log._users == {}
    for k in range(MAX_MEMO_USERS + 10):
        rec.user_id = f"user-{k}"
        log(rec)
    assert 0 < len(log._users) <= MAX_MEMO_USERS
    rec.user_id = "x" * 60_000
    assert log.fields(rec)["user"] == hash_user("x" * 60_000, LOG_KEY)


def test_the_user_hash_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token key's derived key when the variable is set; else one random key per
    run, kept in the environment that the workers inherit."""
    monkeypatch.setenv("RANKGATE_TOKEN_KEY", TOKEN_KEY)
    assert user_hash_key() == LOG_KEY
    assert user_hash_key("OTHER_KEY_VAR") != LOG_KEY
    monkeypatch.delenv("RANKGATE_RUN_USER_HASH_KEY", raising=False)
    monkeypatch.delenv("RANKGATE_TOKEN_KEY")
    first = user_hash_key()
    assert first == user_hash_key() and len(os.environ["RANKGATE_RUN_USER_HASH_KEY"]) == 64
    monkeypatch.delenv("RANKGATE_RUN_USER_HASH_KEY")
    assert user_hash_key() != first


def test_app_log_formats() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.getLogger("rankgate.x").makeRecord(
            "rankgate.x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info()
        )
    rec.__dict__["route"] = "feed"
    line = orjson.loads(JsonFormatter().format(rec))
    assert line["level"] == "error" and line["logger"] == "rankgate.x"
    assert line["msg"] == "failed here" and line["route"] == "feed"
    assert "ValueError: boom" in line["exc"]
    text = TextFormatter().format(rec)
    assert f"ERROR   rankgate.x[{rec.process}]: failed here [route=feed]" in text
    assert "ValueError: boom" in text


def test_config_defaults() -> None:
    cfg = Logging()
    assert (cfg.format, cfg.access_log, cfg.level) == ("json", True, "info")


# -- a real process: stdout is the access log --------------------------------------------


@pytest.fixture
async def setup(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> AsyncIterator[tuple[Path, str, str]]:
    seed_ten_items(redis_db, tmp_path, USER)
    runner, origin = await start_app(ten_item_origin())
    yield tmp_path, origin, redis_url
    await runner.cleanup()


async def run_proxy(setup: Any, logging_line: str) -> ProxyProcess:
    tmp_path, origin, redis_url = setup
    cfg = write_config(tmp_path, origin, redis_url, TEN_ITEMS_ROUTES, logging_line)
    proc = await ProxyProcess.start(cfg, env={"RANKGATE_TOKEN_KEY": TOKEN_KEY})
    try:
        status, headers, _ = await fetch(proc.url("/feed"), headers={"X-User-Id": USER})
        assert status == 200 and headers["X-Rerank"].startswith("applied")
        assert (await fetch(proc.url("/other?token=secret")))[0] == 200
        assert (await fetch(proc.url("/feed")))[0] == 200
    finally:
        assert await proc.stop() == 0
    return proc


async def test_json_access_and_app_logs(setup) -> None:
    proc = await run_proxy(setup, "logging: {format: json, level: info}\n")
    lines = [orjson.loads(line) for line in proc.stdout]  # every line is JSON
    assert len(lines) == 3
    applied, other, anonymous = lines
    assert all(set(line) == ACCESS_FIELDS for line in lines)
    assert applied["route"] == "feed" and applied["outcome"] == "applied"
    assert applied["model"] == "dot" and applied["arm"] == "default"
    assert applied["items"] == 10 and applied["scored"] == 10 and applied["bytes"] > 0
    assert applied["user"] == hash_user(USER, LOG_KEY)
    assert set(applied["timings_ms"]) >= {"origin", "redis", "inference", "rerank", "total"}
    assert other["route"] is None and other["outcome"] == "passthrough"
    assert other["path"] == "/other"  # the query (tokens...) is not logged
    assert anonymous["reason"] == "no-user" and anonymous["user"] is None
    assert not any(USER in line for line in proc.stdout + proc.stderr)
    # Application logs: JSON too, on stderr.
    events = [orjson.loads(line) for line in proc.stderr]
    assert {"ready", "draining", "stopped"} <= {e.get("event") for e in events}
    assert all({"time", "level", "logger", "msg"} <= set(e) for e in events)


async def test_text_format_and_access_log_off(setup) -> None:
    proc = await run_proxy(setup, "logging: {format: text}\n")
    assert len(proc.stdout) == 3
    assert " GET /feed 200 feed applied model=dot arm=default items=10" in proc.stdout[0]
    assert " GET /other 200 - passthrough" in proc.stdout[1]
    ready = f" INFO    rankgate.server[{proc.proc.pid}]: rankgate ready on"
    assert any(ready in line for line in proc.stderr)
    proc = await run_proxy(setup, "logging: {access_log: false}\n")
    assert proc.stdout == []
    assert not any("rankgate.access" in line for line in proc.stderr)


@pytest.fixture
def root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The root logger, put back after setup_logging: handlers, level, and the capture of
    warnings (left on, a later captureWarnings(True) would do nothing)."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    yield root
    logging.captureWarnings(False)


def test_level(root_logger: logging.Logger) -> None:
    sink = Lines()
    setup_logging(Logging(level="warning", format="json"), sink)
    logging.getLogger("rankgate.t").info("quiet")
    logging.getLogger("rankgate.t").warning("loud %d", 1, extra={"route": "feed"})
    assert [orjson.loads(line)["msg"] for line in sink.data] == ["loud 1"]


def test_warnings_are_json_lines(root_logger: logging.Logger) -> None:
    """A dependency's warnings.warn() (redis-py 8.2 warned on stderr) comes out as one
    JSON line like any other log, not as raw text among them."""
    sink = Lines()
    setup_logging(Logging(level="info", format="json"), sink)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a dependency complains", UserWarning, stacklevel=1)
    assert len(sink.data) == 1 and sink.data[0].count(b"\n") == 1
    event = orjson.loads(sink.data[0])
    assert event["logger"] == "py.warnings" and event["level"] == "warning"
    assert "UserWarning: a dependency complains" in event["msg"]
