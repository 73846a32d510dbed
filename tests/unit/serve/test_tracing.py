"""The tracing decisions made at request start: W3C traceparent parsing, parent-based
sampling with a ratio, and the config's errors (their YAML paths)."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict

from proxy.config.settings import Tracing, load_settings
from proxy.config.yamlload import ConfigError
from proxy.outcome.record import RequestRecord
from proxy.serve.tracing import Tracer, parse_traceparent

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"00-{TRACE}-{SPAN}-01", (int(TRACE, 16), int(SPAN, 16), True)),
        (f"00-{TRACE}-{SPAN}-00", (int(TRACE, 16), int(SPAN, 16), False)),
        (f"00-{TRACE}-{SPAN}-03", (int(TRACE, 16), int(SPAN, 16), True)),  # other flags kept out
        (f"01-{TRACE}-{SPAN}-01-future", (int(TRACE, 16), int(SPAN, 16), True)),
        (f"00-{TRACE}-{SPAN}-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TRACE}-{SPAN}-01", None),
        (f"00-{'0' * 32}-{SPAN}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE.upper()}-{SPAN}-01", None),
        (f"00-{TRACE[:-1]}-{SPAN}-01", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_traceparent(value: str | None, expected: object) -> None:
    assert parse_traceparent(value) == expected


def _start(ratio: float, headers: dict[str, str]) -> RequestRecord:
    tracer = Tracer(Tracing(enabled=True, sample_ratio=ratio), spans=None)  # type: ignore[arg-type]
    record = RequestRecord("GET", "/feed")
    tracer.start(CIMultiDict(headers), record)
    return record


def test_parent_based_sampling() -> None:
    # A sampled parent is followed whatever the ratio; an unsampled one never starts a trace.
    record = _start(0.0, {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "a=1"})
    assert record.trace is not None
    assert record.trace.trace_id == int(TRACE, 16) and record.trace.parent_id == int(SPAN, 16)
    assert record.trace.tracestate == "a=1"
    assert record.trace.traceparent == f"00-{TRACE}-{record.trace.origin_span_id:016x}-01"
    assert _start(1.0, {"traceparent": f"00-{TRACE}-{SPAN}-00"}).trace is None
    # No (valid) parent: the ratio decides.
    assert _start(0.0, {}).trace is None
    assert _start(1.0, {"traceparent": "bad"}).trace is not None
    kept = sum(_start(0.25, {}).trace is not None for _ in range(4000))
    assert 800 < kept < 1200


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tracing: {sample_ratio: 1.5}\n", "tracing.sample_ratio: Input should be less than"),
        ("tracing: {endpoint: 'localhost:4318'}\n", "tracing.endpoint: not a URL"),
        ("tracing: {enable: true}\n", "tracing.enable: unknown key (did you mean 'enabled'?)"),
        ("tracing: {service_name: ''}\n", "tracing.service_name: String should have at least"),
    ],
)
def test_config_errors_name_the_yaml_path(tmp_path: Path, text: str, problem: str) -> None:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text("origin: {url: 'http://127.0.0.1:9'}\n" + text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert problem in info.value.render()


def test_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text("origin: {url: 'http://127.0.0.1:9'}\n")
    tracing = load_settings(cfg).tracing
    assert (tracing.enabled, tracing.endpoint, tracing.sample_ratio) == (
        False,
        "http://127.0.0.1:4318",
        0.1,
    )
