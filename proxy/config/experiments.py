"""rankgate.yaml's experiment sections: the exposure log, the events endpoint and
how the readout decides."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from proxy.config.yamlload import ENV_NAME as _ENV
from proxy.config.yamlload import Strict, check_redis_url


class Exposures(Strict):
    """One record per feed decision (what was served, to whom, by which arm), written off
    the request path; see docs/exposures.md."""

    enabled: bool = False
    sink: Literal["redis", "jsonl"] = "redis"
    # redis: a Stream, trimmed to about maxlen entries, on the embeddings' Redis unless
    # redis_url names another (keeping the log's writes off the serving Redis).
    stream: str = "rankgate:exposures"
    redis_url: str | None = None
    maxlen: Annotated[int, Field(ge=1)] = 1_000_000
    # jsonl: files in this directory (relative to this file), one set per process.
    path: str = "exposures"
    max_file_bytes: Annotated[int, Field(ge=4096)] = 64 * 1024 * 1024
    keep_files: Annotated[int, Field(ge=1)] = 10
    # The served ids in a record (and their origin positions, and scores).
    max_items: Annotated[int, Field(ge=1, le=1000)] = 50
    scores: bool = False
    # The record's unit: HMAC-SHA256(key, user id) in hex, or (raw) the user id as it came.
    # The key: derived from the token key (proxy/experiments/tokens.py derive_key), or the
    # value of the environment variable unit_key_env when set (an app holding it can
    # compute the same units).
    unit: Literal["raw", "hmac-sha256"] = "hmac-sha256"
    unit_key_env: Annotated[str, Field(pattern=_ENV)] | None = None
    # X-Rankgate-Id tokens are signed (HMAC-SHA256) with this environment variable's value.
    token_key_env: Annotated[str, Field(pattern=_ENV)] = "RANKGATE_TOKEN_KEY"
    # The bounded queue between the request path and the sink.
    queue_size: Annotated[int, Field(ge=1)] = 10_000
    flush_interval_ms: Annotated[float, Field(gt=0)] = 100.0
    batch: Annotated[int, Field(ge=1)] = 500
    timeout_ms: Annotated[float, Field(gt=0)] = 1000.0

    @field_validator("redis_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_redis_url(value)


class Events(Strict):
    """``POST`` clicks and conversions back, naming the X-Rankgate-Id they follow."""

    enabled: bool = False
    path: str = "/_rankgate/events"
    max_age_s: Annotated[float, Field(gt=0)] = 86_400.0
    max_per_id: Annotated[int, Field(ge=1)] = 20
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 64 * 1024
    # The whole body must be in within this (listen.body_timeout_s bounds each pause too).
    body_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # A conversion's value: a finite number in [min_value, max_value], else 422.
    min_value: float = -1e9
    max_value: float = 1e9

    @model_validator(mode="after")
    def _values(self) -> Events:
        # The readout skips values beyond 1e15 as malformed (proxy/readout/logreader.py).
        if not -1e15 <= self.min_value <= self.max_value <= 1e15:
            raise ValueError("min_value, max_value: want -1e15 <= min_value <= max_value <= 1e15")
        return self

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or "?" in value:
            raise ValueError(f"must be a path starting with '/': {value!r}")
        return value


class Readout(Strict):
    """How ``rankgate experiments report`` decides (docs/guides/experiments.md)."""

    # The chance of ever declaring a false difference, however often the report is read.
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    # Units (users) over the compared arms at which a decision is expected: the confidence
    # sequence is narrowest there (GrowthBook's default).
    expected_units: Annotated[int, Field(ge=10)] = 5000
    # The smallest relative lift that matters: an interval inside +-min_effect is "no
    # difference".
    min_effect: Annotated[float, Field(gt=0, lt=10)] = 0.02
    # No verdict before each compared arm has this many units: the intervals are
    # asymptotic, and a handful of users (one heavy clicker, or none) fools them.
    min_units: Annotated[int, Field(ge=2)] = 100
