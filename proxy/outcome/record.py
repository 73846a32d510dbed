"""What happened to one request: filled in by the request path, read by observers
(metrics, access log) after the response is sent. Data flows one way: observers never
change a request."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.outcome.errors import Outcome, Reason


@dataclass(slots=True)
class Trace:
    """A sampled request's trace (proxy/serve/tracing.py): its ids, chosen before the
    origin is called (so the origin's traceparent names our span), and the stage spans
    the request path marks; the spans are built and exported after the response."""

    trace_id: int
    span_id: int  # the server span's
    origin_span_id: int  # the origin call's: the parent the origin sees
    parent_id: int | None = None  # the client's span, when it sent a valid traceparent
    tracestate: str | None = None
    # (name, start, end, attributes) in perf_counter seconds.
    marks: list[tuple[str, float, float, dict[str, str] | None]] = field(default_factory=list)

    @property
    def traceparent(self) -> str:
        """What the origin receives (W3C trace context, version 00, sampled)."""
        return f"00-{self.trace_id:032x}-{self.origin_span_id:016x}-01"


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
    trace: Trace | None = None  # set only when tracing is on and this request is sampled


def mark(
    record: RequestRecord, name: str, started: float, attributes: dict[str, str] | None = None
) -> None:
    """A stage span from ``started`` to now, on a traced request (else nothing)."""
    trace = record.trace
    if trace is not None:
        trace.marks.append((name, started, time.perf_counter(), attributes))


Observer = Callable[[RequestRecord], None]
