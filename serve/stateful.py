"""The Serve deployment of a stateful agent: a stateless front that forwards each run to its session's
actor (:class:`~raygent.actors.session_actor.SessionDirectory`).

It answers the same calls as :class:`~raygent.serve.replicas.ServedAgent` (``run`` for delegation,
``run_served`` and ``run_events`` for the ingress), so the rest of the graph does not care whether an
agent is stateful. A streamed run sends ``start`` from here, then the ``step``, ``delta`` and ``done``
events that the session actor streams as its step loop runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from raygent.actors.session_actor import SessionDirectory
from raygent.actors.streaming import start_event
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
        """Stream a run: ``start``, then the session actor's ``step`` and ``delta`` events, then ``done``.

        Serve cancels this generator when the ingress lets go of the stream (the client went away);
        the directory then cancels the run in the session actor.
        """
        yield start_event(req, self._replica)
        async with aclosing(self._sessions.run_events(req)) as events:
            async for event in events:
                yield event
