"""Why a request was not re-ranked: one list of reasons, one tree of errors.

Every step of the feed path that gives up raises a ``RankgateError`` whose ``reason`` is
a ``Reason``; the feed path catches that one base class and serves the origin's bytes
with ``X-Rerank: skipped; reason=REASON`` (and ``; plugin=NAME`` when a plugin caused
it). Errors of the libraries underneath (aiohttp, redis-py, orjson, onnxruntime, a
plugin's code) are translated into this tree where they occur, so nothing above those
calls sees a third-party exception. The reason tables of
docs/reference/headers-and-reasons.md are generated from ``Reason``
(tests/unit/outcome/test_errors.py checks it), as are the metrics' label values.

    RankgateError                 reason, plugin, detail
    ├── Skip                      a decision: no-user, unknown-user, bad-vector, control,
                                  method, budget
    ├── OriginError               the origin failed: our own 502/504 (outcome origin-error)
    ├── BodyError                 the origin's answer is not a feed we can re-rank
    ├── ItemsError                the body holds no items we can score
    ├── RedisError                the embeddings' Redis failed
    ├── ModelError                the model run failed
    ├── PluginError               a plugin's hook failed
    └── Ended (proxy/outcome/ending.py)   the request ends off the normal path: the client left
                                  (ClientGone), the origin broke off mid-body
                                  (OriginBrokeOff), rankgate answered itself (Answered)
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import ClassVar

import orjson
import redis.exceptions
from aiohttp import web

from plugins.run import PluginFailure

log = logging.getLogger("rankgate.errors")


class Outcome(StrEnum):
    """What happened to a request (label ``outcome`` in metrics and logs)."""

    APPLIED = "applied"
    SKIPPED = "skipped"
    CONTROL = "control"
    PASSTHROUGH = "passthrough"  # no route matched
    ORIGIN_ERROR = "origin-error"
    CLIENT_ABORT = "client-abort"  # the client left or stalled (nginx's 499 and 408)
    LOCAL = "local"  # rankgate answered itself, without the origin


class Reason(StrEnum):
    NO_USER = "no-user"
    UNKNOWN_USER = "unknown-user"
    BAD_VECTOR = "bad-vector"
    CONTROL = "control"
    METHOD = "method"
    STATUS = "status"
    NOT_JSON = "not-json"
    TOO_LARGE = "too-large"
    ENCODING = "encoding"
    BAD_JSON = "bad-json"
    UNSAFE_NUMBER = "unsafe-number"
    ITEMS_NOT_FOUND = "items-not-found"
    NO_ITEMS = "no-items"
    NO_ITEM_IDS = "no-item-ids"
    NO_ITEM_VECTORS = "no-item-vectors"
    REDIS_TIMEOUT = "redis-timeout"
    REDIS_UNAVAILABLE = "redis-unavailable"
    REDIS_ERROR = "redis-error"
    MODEL_ERROR = "model-error"
    PLUGIN_ERROR = "plugin-error"
    BUDGET = "budget"
    OFFLOAD_BUSY = "offload-busy"
    OFFLOAD_ERROR = "offload-error"
    INTERNAL_ERROR = "internal-error"
    ORIGIN_TIMEOUT = "origin-timeout"
    ORIGIN_UNREACHABLE = "origin-unreachable"
    ORIGIN_ERROR = "origin-error"
    ORIGIN_BUSY = "origin-busy"
    ORIGIN_BROKE_OFF = "origin-broke-off"
    CLIENT_CLOSED = "client-closed"
    SEND_TIMEOUT = "send-timeout"
    BODY_TIMEOUT = "body-timeout"
    BAD_BODY = "bad-body"
    CONNECT = "connect"
    BAD_TARGET = "bad-target"
    OPTIONS_ASTERISK = "options-asterisk"

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self]

    @property
    def outcome(self) -> Outcome:
        return _OUTCOMES.get(self, Outcome.SKIPPED)


DESCRIPTIONS: dict[Reason, str] = {
    Reason.NO_USER: "no user id in the route's sources",
    Reason.UNKNOWN_USER: "no embedding for the user",
    Reason.BAD_VECTOR: "the user's embedding is not `embeddings.dim` float32 values (wrong "
    "length) or holds NaN/inf (`rankgate check` counts such vectors)",
    Reason.CONTROL: "the chosen arm is `model: none` (reported as "
    "`skipped; reason=control; model=none; arm=…`)",
    Reason.METHOD: "a HEAD request (no body to re-rank)",
    Reason.STATUS: "the origin answered other than 200",
    Reason.NOT_JSON: "the Content-Type is not JSON",
    Reason.TOO_LARGE: "the body is over `feed.max_body_bytes` (it streams through, never "
    "buffered whole)",
    Reason.ENCODING: "an unsupported or broken Content-Encoding",
    Reason.BAD_JSON: "the body does not parse",
    Reason.UNSAFE_NUMBER: "an integer beyond 64 bits that re-serializing would round (a route "
    "whose items are spliced serves it as it came)",
    Reason.ITEMS_NOT_FOUND: "the items path is absent or not an array",
    Reason.NO_ITEMS: "the array is empty",
    Reason.NO_ITEM_IDS: "items were found, but none has an id at `item_id` (check the path)",
    Reason.NO_ITEM_VECTORS: "items have ids, but none of them has an embedding in Redis",
    Reason.REDIS_TIMEOUT: "Redis did not answer within `redis.timeout_ms`",
    Reason.REDIS_UNAVAILABLE: "Redis cannot be reached",
    Reason.REDIS_ERROR: "Redis answered with an error",
    Reason.MODEL_ERROR: "the model failed or returned non-finite scores",
    Reason.PLUGIN_ERROR: "a plugin raised (its name is in `plugin=NAME`)",
    Reason.BUDGET: "the route's `budget_ms` ran out",
    Reason.OFFLOAD_BUSY: "a feed over `feed.offload_min_bytes` found every re-rank process "
    "busy (`feed.offload_workers`, at most three feeds each, from the first trip to the second)",
    Reason.OFFLOAD_ERROR: "a re-rank process failed or died (the pool is started anew)",
    Reason.INTERNAL_ERROR: "anything else (logged with a traceback)",
    Reason.ORIGIN_TIMEOUT: "the origin did not answer in time: rankgate answers 504",
    Reason.ORIGIN_UNREACHABLE: "the origin refused or dropped the connection: 502",
    Reason.ORIGIN_ERROR: "the origin's answer was broken: 502",
    Reason.ORIGIN_BUSY: "every origin connection stayed busy for `origin.pool_timeout_s`: "
    "503 with `Retry-After: 1`",
    Reason.ORIGIN_BROKE_OFF: "the origin broke off a response whose headers were already "
    "sent: the client's connection is cut (a truncated transfer, never a short body)",
    Reason.CLIENT_CLOSED: "the client closed its connection before the response was out",
    Reason.SEND_TIMEOUT: "the client read nothing for `listen.send_timeout_s`: cut",
    Reason.BODY_TIMEOUT: "the client's upload stalled for `listen.body_timeout_s`: 408",
    Reason.BAD_BODY: "the client's upload was malformed (e.g. broken chunked encoding)",
    Reason.CONNECT: "a CONNECT request: 405 (rankgate is not a forward proxy)",
    Reason.BAD_TARGET: "a request target that is no path: 400",
    Reason.OPTIONS_ASTERISK: "`OPTIONS *`: answered 200 by rankgate itself",
}

_OUTCOMES: dict[Reason, Outcome] = {
    Reason.CONTROL: Outcome.CONTROL,
    **dict.fromkeys(
        (
            Reason.ORIGIN_TIMEOUT,
            Reason.ORIGIN_UNREACHABLE,
            Reason.ORIGIN_ERROR,
            Reason.ORIGIN_BUSY,
            Reason.ORIGIN_BROKE_OFF,
        ),
        Outcome.ORIGIN_ERROR,
    ),
    **dict.fromkeys(
        (Reason.CLIENT_CLOSED, Reason.SEND_TIMEOUT, Reason.BODY_TIMEOUT, Reason.BAD_BODY),
        Outcome.CLIENT_ABORT,
    ),
    **dict.fromkeys((Reason.CONNECT, Reason.BAD_TARGET, Reason.OPTIONS_ASTERISK), Outcome.LOCAL),
}


class RankgateError(Exception):
    """A reason not to re-rank. ``plugin`` names the plugin behind it, if any."""

    reasons: ClassVar[frozenset[Reason]] = frozenset(Reason)

    def __init__(self, reason: Reason, detail: str = "", *, plugin: str | None = None) -> None:
        if reason not in self.reasons:
            raise ValueError(f"{type(self).__name__} cannot carry reason {reason}")
        super().__init__(detail or reason.description)
        self.reason = reason
        self.detail = detail or reason.description
        self.plugin = plugin


class Skip(RankgateError):
    reasons = frozenset(
        {
            Reason.NO_USER,
            Reason.UNKNOWN_USER,
            Reason.BAD_VECTOR,
            Reason.CONTROL,
            Reason.METHOD,
            Reason.BUDGET,
            Reason.OFFLOAD_BUSY,
            Reason.OFFLOAD_ERROR,
        }
    )


class BodyError(RankgateError):
    reasons = frozenset(
        {
            Reason.STATUS,
            Reason.NOT_JSON,
            Reason.TOO_LARGE,
            Reason.ENCODING,
            Reason.BAD_JSON,
            Reason.UNSAFE_NUMBER,
        }
    )


class ItemsError(RankgateError):
    reasons = frozenset(
        {Reason.ITEMS_NOT_FOUND, Reason.NO_ITEMS, Reason.NO_ITEM_IDS, Reason.NO_ITEM_VECTORS}
    )


class RedisError(RankgateError):
    reasons = frozenset({Reason.REDIS_TIMEOUT, Reason.REDIS_UNAVAILABLE, Reason.REDIS_ERROR})


class ModelError(RankgateError):
    reasons = frozenset({Reason.MODEL_ERROR})


class PluginError(RankgateError):
    reasons = frozenset({Reason.PLUGIN_ERROR})


class OriginError(RankgateError):
    """The origin could not be reached, did not answer, or every connection to it stayed
    busy: the client gets our own ``status`` (502, 503 or 504) with a one-line JSON body.
    (An origin that breaks off after our headers went out: ``proxy.outcome.ending``.)"""

    reasons = frozenset(
        {Reason.ORIGIN_TIMEOUT, Reason.ORIGIN_UNREACHABLE, Reason.ORIGIN_ERROR, Reason.ORIGIN_BUSY}
    )
    STATUS: ClassVar[dict[Reason, int]] = {
        Reason.ORIGIN_TIMEOUT: 504,
        Reason.ORIGIN_UNREACHABLE: 502,
        Reason.ORIGIN_ERROR: 502,
        Reason.ORIGIN_BUSY: 503,
    }

    @property
    def status(self) -> int:
        return self.STATUS[self.reason]

    def response(self) -> web.Response:
        body = orjson.dumps({"error": self.reason.value, "detail": self.detail})
        response = web.Response(status=self.status, body=body, content_type="application/json")
        if self.reason is Reason.ORIGIN_BUSY:
            response.headers["Retry-After"] = "1"  # a pool frees up in well under a second
        return response


# -- translations at the boundaries ------------------------------------------------------


def from_redis(exc: BaseException, plugin: str | None = None) -> RedisError:
    """A redis-py (or socket) failure as the reason the feed path reports."""
    if isinstance(exc, redis.exceptions.TimeoutError | TimeoutError):
        return RedisError(Reason.REDIS_TIMEOUT, "Redis did not answer in time", plugin=plugin)
    if isinstance(exc, redis.exceptions.ConnectionError | OSError):
        return RedisError(Reason.REDIS_UNAVAILABLE, f"Redis unreachable: {exc}", plugin=plugin)
    return RedisError(Reason.REDIS_ERROR, f"Redis error: {exc}", plugin=plugin)


def from_plugin(failure: PluginFailure) -> RankgateError:
    """A plugin's failure: over budget, its Redis call, or its own code."""
    cause = failure.cause
    if cause is None:
        return Skip(Reason.BUDGET, plugin=failure.plugin)
    if isinstance(cause, redis.exceptions.RedisError | OSError):
        return from_redis(cause, failure.plugin)
    return PluginError(Reason.PLUGIN_ERROR, repr(cause), plugin=failure.plugin)


def _table(reasons: list[Reason]) -> str:
    rows = ["| reason | meaning |", "| --- | --- |"]
    rows += [f"| `{r.value}` | {r.description} |" for r in reasons]
    return "\n".join(rows)


def reason_table() -> str:
    """docs/reference/headers-and-reasons.md's table of reasons not to re-rank, as Markdown."""
    return _table([r for r in Reason if r.outcome in (Outcome.SKIPPED, Outcome.CONTROL)])


def origin_table() -> str:
    """docs/reference/headers-and-reasons.md's table of origin failures, as Markdown."""
    return _table([r for r in Reason if r.outcome is Outcome.ORIGIN_ERROR])


def ending_table() -> str:
    """docs/reference/headers-and-reasons.md's table of client aborts and our own answers."""
    return _table([r for r in Reason if r.outcome in (Outcome.CLIENT_ABORT, Outcome.LOCAL)])
