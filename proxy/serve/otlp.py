"""A traced request's spans, built after its response and sent over OTLP/HTTP.

Imported only when ``tracing.enabled`` (proxy/serve/tracing.py): this is the one module
that imports OpenTelemetry. The spans are finished ``ReadableSpan``s made directly, with
the ids chosen at request start (the origin already saw the origin-call span's id as its
parent) and the times the request path recorded, and handed to the SDK's
``BatchSpanProcessor``, whose thread encodes and exports them (the simple processor would
export on the event loop, one HTTP call per span). The SDK's tracer could make the same
spans (start_span/end with those times and a planned-id generator), at several times
the event-loop time per request (docs/guides/tracing-and-explain.md); the sampling
decision is ours either way.
"""

from __future__ import annotations

import random
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from proxy import __version__
from proxy.config.settings import Tracing
from proxy.outcome.record import RequestRecord, Trace

# Spans that leave the process (the rest are our own work).
_CLIENT = frozenset({"origin", "redis user", "redis items"})
PASS_THROUGH = "pass-through"  # the one name of every request no route matched
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ERROR = Status(StatusCode.ERROR)


class SpanExport:
    """One batch processor per serving process (each worker makes its own after the fork)."""

    def __init__(self, cfg: Tracing) -> None:
        self.resource = Resource.create(
            {"service.name": cfg.service_name, "service.version": __version__}
        )
        self.scope = InstrumentationScope("rankgate", __version__)
        exporter = OTLPSpanExporter(endpoint=f"{cfg.endpoint}/v1/traces", timeout=cfg.timeout_s)
        self.processor = BatchSpanProcessor(
            exporter,
            schedule_delay_millis=cfg.batch_delay_ms,
            export_timeout_millis=cfg.timeout_s * 1000,
        )
        # perf_counter seconds -> epoch nanoseconds (the spans' clock).
        self.offset_ns = time.time_ns() - time.perf_counter_ns()

    def _ns(self, seconds: float) -> int:
        return self.offset_ns + int(seconds * 1e9)

    def export(self, record: RequestRecord, trace: Trace) -> None:
        trace_id = trace.trace_id
        state = TraceState.from_header([trace.tracestate]) if trace.tracestate else None
        parent = None
        if trace.parent_id is not None:
            parent = SpanContext(trace_id, trace.parent_id, True, _SAMPLED, state)
        context = SpanContext(trace_id, trace.span_id, False, _SAMPLED, state)
        total = record.timings.get("total", time.perf_counter() - record.started)
        self._emit(
            record.route or PASS_THROUGH,
            context,
            parent,
            attributes(record),
            SpanKind.SERVER,
            record.started,
            record.started + total,
            _ERROR if record.status >= 500 else None,
        )
        origin_end = 0.0
        for name, _, end, _ in trace.marks:
            if name == "origin body":  # the origin call's span lasts until its body is in
                origin_end = end
        for name, start, end, attrs in trace.marks:
            if name == "origin body":
                continue
            span_id = random.getrandbits(64) or 1
            if name == "origin":
                span_id, end = trace.origin_span_id, max(end, origin_end)
            child = SpanContext(trace_id, span_id, False, _SAMPLED, state)
            kind = SpanKind.CLIENT if name in _CLIENT else SpanKind.INTERNAL
            self._emit(name, child, context, attrs, kind, start, end, None)

    def _emit(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attrs: dict[str, str | int] | dict[str, str] | None,
        kind: SpanKind,
        start: float,
        end: float,
        status: Status | None,
    ) -> None:
        span = ReadableSpan(
            name,
            context,
            parent,
            self.resource,
            attrs,
            kind=kind,
            start_time=self._ns(start),
            end_time=self._ns(end),
            instrumentation_scope=self.scope,
            **({"status": status} if status is not None else {}),
        )
        self.processor.on_end(span)

    def close(self) -> None:
        self.processor.shutdown()


def attributes(record: RequestRecord) -> dict[str, str | int]:
    """The server span's: route, arm, model, outcome and reason (never the user id)."""
    out: dict[str, str | int] = {
        "http.request.method": record.method,
        "http.response.status_code": record.status,
        "rankgate.outcome": str(record.outcome),
    }
    if record.route is not None:
        out["http.route"] = out["rankgate.route"] = record.route
        out["rankgate.items"] = record.items
        out["rankgate.scored"] = record.scored
    for key, value in (
        ("rankgate.arm", record.arm),
        ("rankgate.model", record.model),
        ("rankgate.reason", record.reason),
        ("rankgate.plugin", record.plugin),
    ):
        if value is not None:
            out[key] = str(value)
    return out
