"""A process's side of the telemetry hub: record events, push them in batches, hold the controls.

``record`` is synchronous and cheap (an OTel instrument update and a list append); a background task
pushes the buffer every ``flush_interval_s`` (or at ``max_batch_events``) and keeps the
:class:`~raygent.telemetry.controls.ControlSnapshot` the hub answers with. When the hub cannot be reached
the events stay buffered up to ``max_buffered_events`` (the oldest are dropped and counted beyond that)
and calls go on: telemetry never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.obsconfig import MetricsSpec
from raygent.telemetry.controls import ControlSnapshot
from raygent.telemetry.hub import TelemetryHub
from raygent.telemetry.metrics import Gauge, MetricEvent, OtelInstruments

__all__ = ["HubPort", "LocalHubPort", "RayHubPort", "TelemetryClient", "hub_actor_name"]

log = logging.getLogger("raygent.telemetry")

GaugeSource = Callable[[], Sequence[Gauge]]


class HubPort(Protocol):
    """How a process reaches the hub (in this process, or a Ray actor)."""

    async def push(
        self, events: Sequence[MetricEvent], gauges: Sequence[Gauge], component: str
    ) -> ControlSnapshot: ...

    async def render(self, extra: Sequence[Gauge]) -> str: ...

    async def recent(self) -> list[dict[str, Any]]: ...

    async def snapshot(self) -> ControlSnapshot: ...


class LocalHubPort:
    """A hub in this process (tests, benchmarks, :class:`~raygent.actors.inprocess.InProcessFleet`)."""

    def __init__(self, hub: TelemetryHub) -> None:
        self.hub = hub

    async def push(
        self, events: Sequence[MetricEvent], gauges: Sequence[Gauge], component: str
    ) -> ControlSnapshot:
        return await self.hub.push(events, gauges, component=component)

    async def render(self, extra: Sequence[Gauge]) -> str:
        return self.hub.render(extra)

    async def recent(self) -> list[dict[str, Any]]:
        return self.hub.recent()

    async def snapshot(self) -> ControlSnapshot:
        return self.hub.snapshot()


def hub_actor_name(fleet: Fleet) -> str:
    """One hub per fleet and state directory: two fleets of the same name on one Ray stay apart."""
    where = hashlib.sha256(str(fleet.state_path(".").resolve()).encode()).hexdigest()[:10]
    return f"raygent-telemetry-{fleet.name}-{where}"


class RayHubPort:
    """The hub as a detached, named Ray actor, created by whichever process needs it first.

    Detached so it outlives the replica that happened to create it (a replica restart would otherwise
    take the fleet's metrics with it); ``get_if_exists`` makes creation race-free across processes.
    """

    NAMESPACE = "raygent"

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._handle: Any = None

    def _actor(self) -> Any:
        if self._handle is None:
            import ray

            from raygent.telemetry.hubactor import TelemetryHubActor

            self._handle = (
                ray.remote(TelemetryHubActor)
                .options(
                    name=hub_actor_name(self._fleet),
                    namespace=self.NAMESPACE,
                    lifetime="detached",
                    get_if_exists=True,
                    num_cpus=0,
                    max_restarts=-1,
                    max_concurrency=64,
                )
                .remote(self._fleet)
            )
        return self._handle

    async def push(
        self, events: Sequence[MetricEvent], gauges: Sequence[Gauge], component: str
    ) -> ControlSnapshot:
        snapshot: ControlSnapshot = await self._actor().push.remote(list(events), list(gauges), component)
        return snapshot

    async def render(self, extra: Sequence[Gauge]) -> str:
        text: str = await self._actor().render.remote(list(extra))
        return text

    async def recent(self) -> list[dict[str, Any]]:
        recent: list[dict[str, Any]] = await self._actor().recent.remote()
        return recent

    async def snapshot(self) -> ControlSnapshot:
        snapshot: ControlSnapshot = await self._actor().snapshot.remote()
        return snapshot


class TelemetryClient:
    """Records this process's events and keeps its view of the controls.

    Args:
        hub: Where batches go; ``None`` records on the OTel meter only.
        spec: Batching settings.
        instruments: This process's OTel instruments (``None``: no OTel metrics).
        clock: Time source of event timestamps.
        component: Which process this is (``router``, ``gateway``, ``ingress`` …).
    """

    def __init__(
        self,
        hub: HubPort | None,
        *,
        spec: MetricsSpec,
        instruments: OtelInstruments | None,
        clock: Clock,
        component: str,
    ) -> None:
        self._hub = hub
        self._spec = spec
        self._instruments = instruments
        self.clock = clock
        self._component = component
        self._buffer: list[MetricEvent] = []
        self._gauge_sources: list[GaugeSource] = []
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self.controls = ControlSnapshot()
        self.dropped = 0

    @property
    def hub(self) -> HubPort | None:
        return self._hub

    def add_gauges(self, source: GaugeSource) -> None:
        """Report ``source()``'s gauges with every push (e.g. the ingress's queue depths)."""
        self._gauge_sources.append(source)

    def record(self, event: MetricEvent) -> None:
        """Record one event; never blocks, never raises."""
        if self._instruments is not None:
            try:
                self._instruments.record(event)
            except Exception:  # an exporter bug must not fail the call being measured
                log.exception("OTel instrument update failed")
        if self._hub is None:
            return
        self._buffer.append(event)
        overflow = len(self._buffer) - self._spec.max_buffered_events
        if overflow > 0:
            del self._buffer[:overflow]
            self.dropped += overflow
        self._ensure_task()
        if len(self._buffer) >= self._spec.max_batch_events and self._wake is not None:
            self._wake.set()

    def _ensure_task(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a sync caller): the next async record or flush() pushes
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(), name=f"raygent-telemetry-{self._component}")

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._spec.flush_interval_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> ControlSnapshot:
        """Push what is buffered now (and the gauges); returns the controls the hub answered with."""
        if self._hub is None:
            return self.controls
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            batch, self._buffer = self._buffer, []
            gauges = [g for source in self._gauge_sources for g in _safe(source)]
            try:
                self.controls = await self._hub.push(batch, gauges, self._component)
            except Exception as exc:
                # Keep the batch for the next push (bounded by record()); the hub may be restarting.
                self._buffer[:0] = batch
                log.warning(
                    "telemetry push from %s failed (%s); will retry", self._component, type(exc).__name__
                )
        return self.controls

    async def aclose(self) -> None:
        """Stop the background task and push what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.flush()


def _safe(source: GaugeSource) -> Sequence[Gauge]:
    try:
        return source()
    except Exception:
        log.exception("a gauge source failed")
        return ()
