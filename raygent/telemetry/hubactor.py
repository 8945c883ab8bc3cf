"""The telemetry hub as a Ray actor (async: pushes from every process interleave on one event loop)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.store import open_store
from raygent.telemetry.controls import ControlSnapshot
from raygent.telemetry.hub import TelemetryHub
from raygent.telemetry.metrics import Gauge, MetricEvent

__all__ = ["TelemetryHubActor"]


class TelemetryHubActor:
    """Created through :class:`~raygent.telemetry.client.RayHubPort`; one per fleet and state dir."""

    def __init__(self, fleet: Fleet) -> None:
        self._hub = TelemetryHub(fleet.telemetry, store=open_store(fleet), clock=SystemClock())

    async def push(
        self, events: Sequence[MetricEvent], gauges: Sequence[Gauge], component: str
    ) -> ControlSnapshot:
        return await self._hub.push(events, gauges, component=component)

    async def render(self, extra: Sequence[Gauge]) -> str:
        return self._hub.render(extra)

    async def recent(self) -> list[dict[str, Any]]:
        return self._hub.recent()

    async def snapshot(self) -> ControlSnapshot:
        return self._hub.snapshot()

    async def lift(self, agent: str | None, session_id: str | None) -> bool:
        return await self._hub.lift(agent=agent, session_id=session_id)
