"""raygent.telemetry: per-process OTel setup, cross-process trace context and tracing interceptors."""

from raygent.telemetry.interceptors import TracingModelInterceptor, TracingToolInterceptor, context_attributes
from raygent.telemetry.jsonl import JsonlSpanExporter, read_spans, span_to_dict
from raygent.telemetry.propagation import context_from_traceparent, span_id_hex, trace_id_hex, traceparent_of
from raygent.telemetry.setup import build_tracer_provider, tracer_for

__all__ = [
    "JsonlSpanExporter",
    "TracingModelInterceptor",
    "TracingToolInterceptor",
    "build_tracer_provider",
    "context_attributes",
    "context_from_traceparent",
    "read_spans",
    "span_id_hex",
    "span_to_dict",
    "trace_id_hex",
    "traceparent_of",
    "tracer_for",
]
