"""The ingress deployment: the HTTP API in a Serve replica, with the agents reached through handles."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.store import open_store
from raygent.serve.agents import HandleAgentPort
from raygent.serve.api import ApiService, build_api
from raygent.serve.auth import governed_api
from raygent.telemetry.runtime import fleet_tracer

__all__ = ["Ingress"]


class Ingress:
    """Built by :func:`raygent.serve.app.build_app`; ``agents`` maps agent names to their handles."""

    def __init__(self, fleet: Fleet, agents: dict[str, Any]) -> None:
        self._provider, tracer = fleet_tracer(fleet, "ingress")
        self._service = ApiService(
            fleet,
            store=open_store(fleet),
            agents=HandleAgentPort(agents),
            clock=SystemClock(),
            tracer=tracer,
            # One replica drives every run it is asked to cancel; the board (an actor) is only for more.
            share_cancels=fleet.server.replicas > 1,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Serve calls this after __init__ on the replica, so the app is built around live handles.
        return build_api(self._service)

    async def check_health(self) -> None:
        # Serve calls this every few seconds on the replica's event loop; it (re)starts the async-run
        # sweeper, so a restarted ingress takes over abandoned async runs even before any request.
        self._service.serving.runner.start()
        cancels = self._service.serving.cancels
        if cancels is not None:
            cancels.start()  # before any run too: a replica that restarted may be handed one any time
        # Governed fleets: likewise the approvals sweeper (expiries, resuming runs whose approval was
        # decided while no ingress was up, or whose resume was lost in a restart).
        gov = governed_api(self._service)
        if gov is not None:
            gov.ensure_sweeper()
