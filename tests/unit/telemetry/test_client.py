"""The per-process client: batches events to the hub, keeps them while the hub is away, adopts controls."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from raygent.core.clock import SystemClock
from raygent.core.config import TelemetrySpec
from raygent.core.obsconfig import MetricsSpec
from raygent.telemetry.client import LocalHubPort, TelemetryClient
from raygent.telemetry.controls import ControlSnapshot
from raygent.telemetry.hub import TelemetryHub
from raygent.telemetry.metrics import Gauge, MetricEvent


class FlakyHub(LocalHubPort):
    """A real hub behind a port that fails while ``down`` (a restarting actor)."""

    def __init__(self) -> None:
        super().__init__(TelemetryHub(TelemetrySpec(), store=None, clock=SystemClock()))
        self.down = False

    async def push(
        self, events: Sequence[MetricEvent], gauges: Sequence[Gauge], component: str
    ) -> ControlSnapshot:
        if self.down:
            raise ConnectionError("hub restarting")
        return await super().push(events, gauges, component)


def event(i: int) -> MetricEvent:
    return MetricEvent("tool", "a", "t", 0.01, float(i))


async def test_events_are_pushed_in_batches_by_the_background_task() -> None:
    hub = FlakyHub()
    client = TelemetryClient(
        hub,
        spec=MetricsSpec(flush_interval_s=0.01, max_batch_events=5),
        instruments=None,
        clock=SystemClock(),
        component="gateway",
    )
    for i in range(12):
        client.record(event(i))
    for _ in range(200):
        if hub.hub.metrics.events_seen == 12:
            break
        await asyncio.sleep(0.01)
    assert hub.hub.metrics.events_seen == 12
    assert hub.hub.pushes < 12  # batched, not one call per event
    await client.aclose()


async def test_a_hub_outage_keeps_events_bounded_and_delivers_them_later() -> None:
    hub = FlakyHub()
    hub.down = True
    client = TelemetryClient(
        hub,
        spec=MetricsSpec(flush_interval_s=60, max_buffered_events=10),
        instruments=None,
        clock=SystemClock(),
        component="router",
    )
    for i in range(15):
        client.record(event(i))
    await client.flush()
    assert client.dropped == 5  # the 5 oldest, beyond the bound
    hub.down = False
    client.hub.hub.controls.throttle("a", SystemClock().now() + 30)  # type: ignore[union-attr]
    controls = await client.flush()
    assert hub.hub.metrics.events_seen == 10
    assert client.controls is controls and controls.throttle_left_s("a", SystemClock().now()) > 0
    await client.aclose()


async def test_gauges_go_with_every_push() -> None:
    hub = FlakyHub()
    client = TelemetryClient(
        hub, spec=MetricsSpec(), instruments=None, clock=SystemClock(), component="ingress"
    )
    depth: dict[str, Any] = {"v": 1.0}
    client.add_gauges(lambda: [Gauge("raygent_queue_depth", (("agent", "a"),), depth["v"])])
    await client.flush()
    depth["v"] = 4.0
    await client.flush()
    assert 'raygent_queue_depth{agent="a"} 4' in hub.hub.render()
    await client.aclose()
