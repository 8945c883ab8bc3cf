"""Per-process telemetry for a fleet component (each Ray worker builds its own provider and client)."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from raygent.core.clock import Clock, SystemClock
from raygent.core.config import Fleet
from raygent.telemetry.client import HubPort, RayHubPort, TelemetryClient
from raygent.telemetry.metrics import OtelInstruments, build_meter_provider
from raygent.telemetry.redaction import ArgumentRedactor
from raygent.telemetry.setup import build_tracer_provider

__all__ = ["fleet_metrics", "fleet_tracer", "in_ray_actor", "tool_redactor"]


def fleet_tracer(fleet: Fleet, component: str) -> tuple[TracerProvider, Tracer]:
    """A tracer provider and tracer for ``component`` configured by the fleet's telemetry section."""
    spec = fleet.telemetry
    provider = build_tracer_provider(
        spec,
        jsonl_path=fleet.state_path(spec.jsonl_path),
        resource_attributes=_resource(fleet, component),
    )
    return provider, provider.get_tracer(f"raygent.{component}")


def _resource(fleet: Fleet, component: str) -> dict[str, str]:
    return {
        "service.name": fleet.telemetry.service_name,
        "raygent.component": component,
        "raygent.fleet": fleet.name,
    }


def in_ray_actor() -> bool:
    """Whether this code runs inside a Ray actor (a Serve replica): only there is the hub actor used.

    A driver (tests, ``raygent`` commands) never creates it: a test process with Ray up would otherwise
    start one hub process per temporary fleet.
    """
    try:
        import ray

        return bool(ray.is_initialized() and ray.get_runtime_context().get_actor_id())
    except Exception:  # Ray missing or half torn down
        return False


def fleet_metrics(
    fleet: Fleet, component: str, *, hub: HubPort | None = None, clock: Clock | None = None
) -> TelemetryClient | None:
    """This process's telemetry client, or ``None`` when the fleet turns metrics off.

    Args:
        fleet: The fleet (``telemetry.metrics`` and ``telemetry.otlp``).
        component: Which process this is.
        hub: Where events go; default: the fleet's hub actor inside a Ray actor, nowhere elsewhere.
        clock: Time source (default: the system clock).
    """
    spec = fleet.telemetry
    if not spec.metrics.enabled:
        return None
    if hub is None and in_ray_actor():
        hub = RayHubPort(fleet)
    otlp = spec.otlp if spec.exporter == "otlp" else None
    meter_provider = build_meter_provider(otlp=otlp, resource_attributes=_resource(fleet, component))
    instruments = OtelInstruments(meter_provider.get_meter(f"raygent.{component}"))
    return TelemetryClient(
        hub, spec=spec.metrics, instruments=instruments, clock=clock or SystemClock(), component=component
    )


def tool_redactor(fleet: Fleet) -> ArgumentRedactor:
    """The redactor of tool arguments on spans: the tools' schemas plus the fleet's audit redact keys."""
    return ArgumentRedactor.from_tools(
        {name: tool.parameters for name, tool in fleet.tools.items()}, secret_keys=fleet.audit.redact_keys
    )
