"""Build one tracer provider per process from the fleet's ``telemetry`` section.

There is deliberately no global provider: each Ray worker builds its own and passes the tracer to the
components that need it, so two actors in one test process never fight over ``set_tracer_provider``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Tracer

from raygent.core.config import TelemetrySpec
from raygent.core.errors import ConfigError
from raygent.core.obsconfig import OtlpSpec
from raygent.telemetry.jsonl import JsonlSpanExporter

__all__ = ["build_tracer_provider", "otlp_headers", "otlp_span_exporter", "tracer_for"]

_INSTRUMENTATION_VERSION = "0.1.0"


def build_tracer_provider(
    spec: TelemetrySpec,
    *,
    jsonl_path: Path | None = None,
    resource_attributes: dict[str, str] | None = None,
) -> TracerProvider:
    """Create a tracer provider for this process.

    Every exporter choice yields real spans with real ids, so trace context still propagates across
    processes when nothing is exported. Call ``provider.shutdown()`` before the process exits; it
    flushes the batch processor used for the console.

    Args:
        spec: The fleet's telemetry section.
        jsonl_path: Resolved file for the ``jsonl`` exporter (usually
            ``fleet.state_path(spec.jsonl_path)``); required for that exporter.
        resource_attributes: Extra resource attributes, e.g. which role this process plays; a
            ``service.name`` here overrides ``spec.service_name``.

    Returns:
        A provider sampling with ``ParentBased(TraceIdRatioBased(spec.sample_ratio))``.

    Raises:
        ConfigError: The exporter is ``jsonl`` and ``jsonl_path`` is missing.
    """
    # Explicit resource attributes win over the fleet-wide service name (e.g. one name per process role).
    resource = Resource.create({SERVICE_NAME: spec.service_name, **(resource_attributes or {})})
    # ParentBased: a remote parent's sampling decision wins, so a run is traced in every process or in
    # none; the ratio applies only where a trace starts.
    sampler = ParentBased(TraceIdRatioBased(spec.sample_ratio))
    provider = TracerProvider(sampler=sampler, resource=resource)
    if spec.exporter == "jsonl":
        if jsonl_path is None:
            raise ConfigError("telemetry exporter 'jsonl' needs a resolved jsonl_path")
        # Simple (synchronous) processor: a span is on disk when the call that ended it returns, which
        # tests and `raygent` tools that read the file right after a run rely on.
        provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(jsonl_path)))
    elif spec.exporter == "console":
        # Batched: printing from the request path would add latency to every call.
        # sys.stdout looked up now: the exporter's default is bound at import, before any redirection.
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
    elif spec.exporter == "otlp":
        # Batched and exported from a background thread: a slow or absent collector never delays a call;
        # when its queue is full the SDK drops spans rather than blocking.
        provider.add_span_processor(BatchSpanProcessor(otlp_span_exporter(spec.otlp or OtlpSpec())))
    return provider


def otlp_headers(spec: OtlpSpec) -> dict[str, str]:
    """Headers for the collector from ``spec.headers_env`` (``k=v,k2=v2``), e.g. an API key.

    Raises:
        ConfigError: The variable is set but not in ``k=v`` form.
    """
    raw = os.environ.get(spec.headers_env, "") if spec.headers_env else ""
    headers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{spec.headers_env} must hold comma-separated key=value headers")
        headers[key.strip().lower()] = value.strip()
    return headers


def otlp_span_exporter(spec: OtlpSpec) -> SpanExporter:
    """An OTLP span exporter for ``spec`` (protobuf over HTTP, or gRPC).

    Imported here rather than at module level: the gRPC stack is heavy and most processes never need it.
    """
    if spec.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        endpoint = spec.endpoint.split("://", 1)[1]
        return GrpcExporter(
            endpoint=endpoint, insecure=spec.insecure, headers=otlp_headers(spec), timeout=spec.timeout_s
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(
        endpoint=f"{spec.endpoint}/v1/traces", headers=otlp_headers(spec), timeout=spec.timeout_s
    )


def tracer_for(provider: TracerProvider, name: str) -> Tracer:
    """A tracer from ``provider`` for the instrumentation scope ``name`` (e.g. ``"raygent.router"``)."""
    return provider.get_tracer(name, _INSTRUMENTATION_VERSION)
