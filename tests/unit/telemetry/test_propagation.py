"""traceparent strings across (simulated) process boundaries, and the ``none`` exporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raygent.core.config import TelemetrySpec
from raygent.telemetry import (
    build_tracer_provider,
    context_from_traceparent,
    read_spans,
    span_id_hex,
    trace_id_hex,
    traceparent_of,
    tracer_for,
)

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
MALFORMED: list[Any] = [
    None,
    "",
    "garbage",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
    "00-" + "0" * 32 + "-b7ad6b7169203331-01",  # all-zero trace id is invalid
    "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",  # all-zero span id is invalid
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff is forbidden
    "00-0AF7651916CD43DD8448EB211C80319Z-b7ad6b7169203331-01",  # not hex
    "x" * 10_000,
    123,  # wrong type from a careless caller
]


def test_round_trip_through_a_string() -> None:
    ctx = context_from_traceparent(VALID)
    span_context = trace.get_current_span(ctx).get_span_context()

    assert span_context.is_valid
    assert span_context.is_remote
    assert trace_id_hex(VALID) == "0af7651916cd43dd8448eb211c80319c"
    assert span_id_hex(VALID) == "b7ad6b7169203331"
    assert traceparent_of(ctx) == VALID


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_traceparent_is_ignored(bad: Any) -> None:
    ctx = context_from_traceparent(bad)

    assert ctx == Context()
    assert not trace.get_current_span(ctx).get_span_context().is_valid
    assert trace_id_hex(bad) is None
    assert span_id_hex(bad) is None


def test_traceparent_of_a_span_and_of_the_current_context() -> None:
    provider = TracerProvider()
    tracer = tracer_for(provider, "test")

    assert traceparent_of() is None  # nothing is current
    with tracer.start_as_current_span("outer") as span:
        current = traceparent_of()
        given = traceparent_of(span)
    ctx = span.get_span_context()

    assert current == given
    assert given is not None
    assert trace_id_hex(given) == f"{ctx.trace_id:032x}"
    assert span_id_hex(given) == f"{ctx.span_id:016x}"


def test_context_from_traceparent_ignores_the_current_span() -> None:
    tracer = tracer_for(TracerProvider(), "test")
    with tracer.start_as_current_span("unrelated"):
        assert context_from_traceparent(None) == Context()


def test_unsampled_decision_travels_with_the_traceparent() -> None:
    # Process A samples nothing; process B would sample everything on its own, but follows A's decision.
    never = build_tracer_provider(TelemetrySpec(sample_ratio=0.0))
    always = build_tracer_provider(TelemetrySpec(sample_ratio=1.0))
    exported = InMemorySpanExporter()
    always.add_span_processor(SimpleSpanProcessor(exported))

    with tracer_for(never, "a").start_as_current_span("root") as root:
        tp = traceparent_of(root)
    assert tp is not None
    assert int(tp[-2:], 16) & 0x01 == 0  # the W3C "sampled" flag is off
    with tracer_for(always, "b").start_as_current_span(
        "child", context=context_from_traceparent(tp)
    ) as child:
        assert not child.is_recording()
    assert exported.get_finished_spans() == ()


def test_none_exporter_exports_nothing_but_still_propagates(tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    # Agent process: exporter "none" (even with a path given, nothing is written).
    agent = build_tracer_provider(TelemetrySpec(exporter="none"), jsonl_path=spans_file)
    # Router process: writes spans to the jsonl file.
    router = build_tracer_provider(TelemetrySpec(exporter="jsonl"), jsonl_path=spans_file)

    with tracer_for(agent, "agent").start_as_current_span("invoke_agent") as root:
        assert root.is_recording()
        tp = traceparent_of(root)
    tracer = tracer_for(router, "router")
    with tracer.start_as_current_span("chat", context=context_from_traceparent(tp)):
        pass
    agent.shutdown()
    router.shutdown()

    (only,) = read_spans(spans_file)
    root_ctx = root.get_span_context()
    assert only["name"] == "chat"
    assert only["trace_id"] == f"{root_ctx.trace_id:032x}"
    assert only["parent_span_id"] == f"{root_ctx.span_id:016x}"
