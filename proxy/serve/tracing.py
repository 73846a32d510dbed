"""Traces: W3C trace context in, one server span per request with its stages out.

Cheap by construction, since a proxy's own overhead is what it is judged by:
- at request start, ``start`` reads the client's ``traceparent`` and decides, parent-based
  (a client's sampled flag is followed; a new trace is kept with probability
  ``tracing.sample_ratio``, by the same trace-id rule as OpenTelemetry's
  ``TraceIdRatioBased``). Only a sampled request gets a ``Trace`` (ids, and a list the
  stages append their ``mark``s to); the origin then sees our origin-call span as parent.
- after the response, ``export`` builds the spans from the record and its marks and hands
  them to OpenTelemetry's batch processor (proxy/serve/otlp.py), which sends them over
  OTLP/HTTP from its own thread.
An unsampled request pays the header parse; with tracing off nothing here runs and
OpenTelemetry is never imported (the ``otel`` extra is optional).
"""

from __future__ import annotations

import logging
import random
import re
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config.settings import Tracing as TracingSettings
from proxy.config.yamlload import ConfigError
from proxy.outcome.record import RequestRecord, Trace

if TYPE_CHECKING:
    from proxy.serve.otlp import SpanExport

log = logging.getLogger("rankgate.tracing")

# version-traceid-parentid-flags, lowercase hex (W3C Trace Context level 1, 3.2). A
# version above 00 may carry more fields after a dash; version ff is invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_MAX_TRACESTATE = 512 * 32  # 32 list members of up to 512 characters (W3C 3.3.1.1)
_LOW64 = (1 << 64) - 1


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a valid header, else None (W3C 3.2.2:
    an invalid traceparent is ignored and a new trace starts)."""
    if value is None:
        return None
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = found.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, bool(int(flags_hex, 16) & 1)


def _span_id() -> int:
    return random.getrandbits(64) or 1


class Tracer:
    """Tracing for one serving process: ``start`` per request, ``export`` after it."""

    def __init__(self, cfg: TracingSettings, spans: SpanExport) -> None:
        self.cfg = cfg
        self.spans = spans
        # TraceIdRatioBased's rule: the low 64 bits of the trace id under ratio * 2^64.
        self._bound = round(cfg.sample_ratio * (1 << 64))

    def start(
        self, headers: CIMultiDictProxy[str] | CIMultiDict[str], record: RequestRecord
    ) -> None:
        """A request's sampling decision, from its headers; a sampled one gets its Trace."""
        parent = parse_traceparent(headers.get("traceparent"))
        if parent is not None:
            trace_id, parent_id, sampled = parent
        else:
            trace_id, parent_id = random.getrandbits(128) or 1, None
            sampled = (trace_id & _LOW64) < self._bound
        if not sampled:
            return  # the client's trace context reaches the origin as it came
        state = None
        if parent_id is not None:
            state = ",".join(headers.getall("tracestate", ())) or None
            if state is not None and len(state) > _MAX_TRACESTATE:
                state = None
        record.trace = Trace(trace_id, _span_id(), _span_id(), parent_id, state)

    def export(self, record: RequestRecord) -> None:
        """An observer (after the response): the request's spans to the batch processor."""
        if record.trace is not None:
            self.spans.export(record, record.trace)

    def close(self) -> None:
        """Flush what is queued (bounded by tracing.timeout_s) and stop the exporter."""
        self.spans.close()


def open_tracer(cfg: TracingSettings) -> Tracer | None:
    """The process's tracer when tracing is on (OpenTelemetry imported here, only then);
    a missing ``otel`` extra stops the start with a one-line error."""
    if not cfg.enabled:
        return None
    try:
        from proxy.serve.otlp import SpanExport
    except ImportError as exc:
        raise ConfigError(
            "tracing",
            [f"enabled: needs OpenTelemetry: pip install 'rankgate[otel]' ({exc.name} missing)"],
        ) from None
    return Tracer(cfg, SpanExport(cfg))
