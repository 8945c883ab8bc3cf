"""An observed fleet in process: the example fleet with a detector, one local hub shared by the model and
tool chains and the HTTP API (ASGI, no Ray)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raygent.actors.inprocess import InProcessFleet
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.fleetfile import load_fleet
from raygent.core.obsconfig import (
    DetectorActionsSpec,
    DetectorSpec,
    MetricsSpec,
    TokenSpikeSpec,
    ToolErrorSpec,
)
from raygent.core.store import SQLiteStore
from raygent.serve.api import ApiService, build_api
from raygent.serve.metrics_route import attach_hub
from raygent.telemetry.client import LocalHubPort, TelemetryClient
from raygent.telemetry.hub import TelemetryHub
from raygent.telemetry.runtime import fleet_metrics

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "fleet.yaml"


def observed_fleet(state: Path, **telemetry: object) -> Fleet:
    fleet = load_fleet(EXAMPLE, state_dir=state)
    spec = fleet.telemetry.model_copy(
        update={
            "metrics": MetricsSpec(flush_interval_s=60),  # pushed explicitly by the tests
            "detector": DetectorSpec(
                token_spike=TokenSpikeSpec(min_samples=10, actions=["alert", "quarantine"]),
                tool_errors=ToolErrorSpec(actions=["throttle"]),
                actions=DetectorActionsSpec(throttle_s=600, quarantine_s=600),
            ),
            **telemetry,
        }
    )
    return fleet.model_copy(update={"telemetry": spec})


@dataclass
class Observed:
    fleet: Fleet
    http: httpx.AsyncClient
    hub: TelemetryHub
    client: TelemetryClient
    store: SQLiteStore
    spans: InMemorySpanExporter


@pytest.fixture
async def observed(tmp_path: Path) -> AsyncIterator[Observed]:
    fleet = observed_fleet(tmp_path / "state")
    clock = SystemClock()
    store = SQLiteStore(fleet.state_path("raygent.db"))
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("observed")
    hub = TelemetryHub(fleet.telemetry, store=store, clock=clock)
    port = LocalHubPort(hub)
    client = fleet_metrics(fleet, "router+gateway", hub=port, clock=clock)
    assert client is not None
    inproc = InProcessFleet(fleet, store=store, tracer=tracer, clock=clock, telemetry=client)
    service = ApiService(fleet, store=store, invoker=inproc, clock=clock, tracer=tracer)
    attach_hub(service, port)
    app = build_api(service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30
    ) as http:
        yield Observed(fleet, http, hub, client, store, spans)
    await client.aclose()
    await service.serving.aclose()
    await inproc.aclose()
    await store.close()
