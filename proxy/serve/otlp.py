"""A traced request's spans, built after its response and sent over OTLP/HTTP.

Imported only when ``tracing.enabled`` (proxy/serve/tracing.py): this is the one module
that imports OpenTelemetry. The spans are made with the SDK's own tracer, backdated to
the times the request path recorded, with the ids chosen at request start (the origin
already saw the origin-call span's id as its parent); the SDK's ``BatchSpanProcessor``
queues them and its thread exports them (the simple processor would export on the event
loop, one HTTP call per span).
"""

from __future__ import annotations

import time

from opentelemetry import trace as api
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode, TraceFlags, TraceState

from proxy import __version__
from proxy.config.settings import Tracing
from proxy.outcome.record import RequestRecord, Trace

# Spans that leave the process (the rest are our own work).
_CLIENT = frozenset({"origin", "redis user", "redis items"})
PASS_THROUGH = "pass-through"  # the one name of every request no route matched


class PlannedIds(IdGenerator):
    """Hands out the ids the request path chose (set just before each span starts)."""

    def __init__(self) -> None:
        self.random = RandomIdGenerator()
        self.trace_id = 0
        self.span_id = 0

    def generate_span_id(self) -> int:
        span_id, self.span_id = self.span_id, 0
        return span_id or self.random.generate_span_id()

    def generate_trace_id(self) -> int:
        return self.trace_id or self.random.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return True


class SpanExport:
    """One TracerProvider per serving process (each worker makes its own after the fork)."""

    def __init__(self, cfg: Tracing) -> None:
        self.ids = PlannedIds()
        self.provider = TracerProvider(
            sampler=ALWAYS_ON,  # sampling was decided at request start
            resource=Resource.create(
                {"service.name": cfg.service_name, "service.version": __version__}
            ),
            id_generator=self.ids,
        )
        exporter = OTLPSpanExporter(endpoint=f"{cfg.endpoint}/v1/traces", timeout=cfg.timeout_s)
        self.processor = BatchSpanProcessor(
            exporter,
            schedule_delay_millis=cfg.batch_delay_ms,
            export_timeout_millis=cfg.timeout_s * 1000,
        )
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("rankgate", __version__)
        # perf_counter seconds -> epoch nanoseconds (the spans' clock).
        self.offset_ns = time.time_ns() - time.perf_counter_ns()

    def _ns(self, seconds: float) -> int:
        return self.offset_ns + int(seconds * 1e9)

    def export(self, record: RequestRecord, trace: Trace) -> None:
        ids, tracer = self.ids, self.tracer
        parent = Context()
        if trace.parent_id is not None:
            state = TraceState.from_header([trace.tracestate]) if trace.tracestate else None
            remote = api.SpanContext(
                trace.trace_id,
                trace.parent_id,
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
                trace_state=state,
            )
            parent = api.set_span_in_context(api.NonRecordingSpan(remote))
        ids.trace_id, ids.span_id = trace.trace_id, trace.span_id
        server = tracer.start_span(
            record.route or PASS_THROUGH,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes(record),
            start_time=self._ns(record.started),
        )
        ids.trace_id = 0
        inside = api.set_span_in_context(server)
        origin_end = 0.0
        for name, _, end, _ in trace.marks:
            if name == "origin body":  # the origin call's span lasts until its body is in
                origin_end = end
        for name, start, end, attrs in trace.marks:
            if name == "origin body":
                continue
            if name == "origin":
                ids.span_id = trace.origin_span_id
                end = max(end, origin_end)
            kind = SpanKind.CLIENT if name in _CLIENT else SpanKind.INTERNAL
            span = tracer.start_span(
                name, context=inside, kind=kind, attributes=attrs, start_time=self._ns(start)
            )
            span.end(end_time=self._ns(end))
        if record.status >= 500:
            server.set_status(Status(StatusCode.ERROR))
        total = record.timings.get("total")
        server.end(end_time=self._ns(record.started + total) if total is not None else None)

    def close(self) -> None:
        self.provider.shutdown()


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
