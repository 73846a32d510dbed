"""What happened to one request: filled in by the request path, read by observers
(metrics, access log) after the response is sent. Data flows one way: observers never
change a request."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.outcome.errors import Outcome, Reason


@dataclass(slots=True)
class RequestRecord:
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    status: int = 0
    route: str | None = None
    outcome: Outcome = Outcome.PASSTHROUGH
    reason: Reason | None = None
    plugin: str | None = None  # the plugin that caused the skip (its ``use:`` name)
    model: str | None = None
    arm: str | None = None
    user_id: str | None = None
    items: int = 0
    scored: int = 0
    bytes_out: int | None = None
    # Stage durations in seconds: origin, redis, inference, rerank, total, plugin:NAME.
    timings: dict[str, float] = field(default_factory=dict)


Observer = Callable[[RequestRecord], None]
