"""The ingress deployment: the HTTP API in a Serve replica, with the agents reached through handles."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.remote import RemoteAgentInvoker
from raygent.core.store import open_store
from raygent.serve.api import ApiService, build_api
from raygent.telemetry.runtime import fleet_tracer

__all__ = ["Ingress"]


class Ingress:
    """Built by :func:`raygent.serve.app.build_app`; ``agents`` maps agent names to their handles."""

    def __init__(self, fleet: Fleet, agents: dict[str, Any]) -> None:
        self._provider, tracer = fleet_tracer(fleet, "ingress")
        handles = dict(agents)
        self._service = ApiService(
            fleet,
            store=open_store(fleet),
            invoker=RemoteAgentInvoker(handles.__getitem__),
            clock=SystemClock(),
            tracer=tracer,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Serve calls this after __init__ on the replica, so the app is built around live handles.
        return build_api(self._service)
