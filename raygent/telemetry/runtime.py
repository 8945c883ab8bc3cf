"""Per-process telemetry for a fleet component (each Ray worker builds its own provider)."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from raygent.core.config import Fleet
from raygent.telemetry.setup import build_tracer_provider

__all__ = ["fleet_tracer"]


def fleet_tracer(fleet: Fleet, component: str) -> tuple[TracerProvider, Tracer]:
    """A tracer provider and tracer for ``component`` configured by the fleet's telemetry section."""
    spec = fleet.telemetry
    provider = build_tracer_provider(
        spec,
        jsonl_path=fleet.state_path(spec.jsonl_path),
        resource_attributes={
            "service.name": spec.service_name,
            "raygent.component": component,
            "raygent.fleet": fleet.name,
        },
    )
    return provider, provider.get_tracer(f"raygent.{component}")
