"""raygent.telemetry: per-process OTel setup, cross-process trace context, tracing interceptors, metrics,
the telemetry hub and the anomaly detector."""

from raygent.telemetry.client import HubPort, LocalHubPort, RayHubPort, TelemetryClient
from raygent.telemetry.control import MetricsModelInterceptor, MetricsToolInterceptor
from raygent.telemetry.controls import ControlSnapshot
from raygent.telemetry.detector import AnomalyDetector, Detection
from raygent.telemetry.errors import AgentThrottledError
from raygent.telemetry.hub import TelemetryHub
from raygent.telemetry.interceptors import TracingModelInterceptor, TracingToolInterceptor, context_attributes
from raygent.telemetry.jsonl import JsonlSpanExporter, read_spans, span_to_dict
from raygent.telemetry.metrics import Gauge, MetricEvent, MetricsAggregate
from raygent.telemetry.propagation import context_from_traceparent, span_id_hex, trace_id_hex, traceparent_of
from raygent.telemetry.redaction import ArgumentRedactor
from raygent.telemetry.setup import build_tracer_provider, tracer_for

__all__ = [
    "AgentThrottledError",
    "AnomalyDetector",
    "ArgumentRedactor",
    "ControlSnapshot",
    "Detection",
    "Gauge",
    "HubPort",
    "JsonlSpanExporter",
    "LocalHubPort",
    "MetricEvent",
    "MetricsAggregate",
    "MetricsModelInterceptor",
    "MetricsToolInterceptor",
    "RayHubPort",
    "TelemetryClient",
    "TelemetryHub",
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
