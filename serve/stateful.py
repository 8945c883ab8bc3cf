"""The Serve deployment of a stateful agent: a stateless front that forwards each run to its session's
actor (:class:`~raygent.actors.session_actor.SessionDirectory`).

It answers the same calls as :class:`~raygent.serve.replicas.ServedAgent` (``run`` for delegation,
``run_served`` and ``run_events`` for the ingress), so the rest of the graph does not care whether an
agent is stateful. A streamed run of a stateful agent sends ``start`` and ``done`` (no per-step events:
the steps happen in the session actor, whose progress is in its checkpoints).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from raygent.actors.session_actor import SessionDirectory
from raygent.core.config import Fleet
from raygent.core.runs import RunInput, RunOutput
from raygent.serve.events import RunEvent, ServedRun
from raygent.serve.replicas import current_replica_id

__all__ = ["ServedStatefulAgent"]


class ServedStatefulAgent:
    """Deployed as ``agent-<name>`` for agents with ``stateful: true``.

    Args:
        fleet: The loaded fleet.
        agent: The stateful agent.
        router: Handle of the router deployment.
        gateway: Handle of the gateway deployment.
    """

    def __init__(self, fleet: Fleet, agent: str, router: Any, gateway: Any) -> None:
        from ray import serve

        app_name = serve.get_replica_context().app_name
        self._sessions = SessionDirectory(fleet, agent, router, gateway, app_name=app_name)
        self._replica = current_replica_id()

    async def run(self, req: RunInput) -> RunOutput:
        return await self._sessions.run(req)

    async def run_served(self, req: RunInput) -> ServedRun:
        return ServedRun(await self.run(req), self._replica)

    async def run_events(self, req: RunInput) -> AsyncIterator[RunEvent]:
        start = {
            "run_id": req.run_id,
            "session_id": req.session_id,
            "agent": req.agent,
            "replica": self._replica,
        }
        yield RunEvent("start", start)
        yield RunEvent("done", await self.run(req))
