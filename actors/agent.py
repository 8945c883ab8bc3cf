"""AgentActor: one agent role as a Ray Serve replica (stateless: context is loaded by session id)."""

from __future__ import annotations

from typing import Any

from raygent.actors.steploop import AgentLoop
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.remote import RemoteModelStage, RemoteToolStage
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store import open_store
from raygent.telemetry.runtime import fleet_tracer

__all__ = ["AgentActor"]


class AgentActor:
    """Any replica serves any session: nothing about a session stays in the replica between runs.

    Args:
        fleet: The loaded fleet.
        agent: The role this replica runs.
        router: Handle of the router deployment (model calls leave the process).
        gateway: Handle of the gateway deployment (tool calls leave the process).
    """

    def __init__(self, fleet: Fleet, agent: str, router: Any, gateway: Any) -> None:
        self._provider, tracer = fleet_tracer(fleet, f"agent.{agent}")
        self._store = open_store(fleet)
        self._loop = AgentLoop(
            fleet,
            agent,
            store=self._store,
            model=RemoteModelStage(router),
            tools=RemoteToolStage(gateway),
            tracer=tracer,
            clock=SystemClock(),
        )

    async def run(self, req: RunInput) -> RunOutput:
        return await self._loop.run(req)
