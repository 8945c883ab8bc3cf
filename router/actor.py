"""The routing actor: one process that owns the model backends, their live state and the model-call
interceptor chain (tracing, then audit, around the router's choice of backend)."""

from __future__ import annotations

from opentelemetry.trace import Tracer

from raygent.core.clock import Clock, SystemClock
from raygent.core.config import Fleet
from raygent.core.interceptors import ModelCallInput, ModelCallOutput, ModelStage, chain_model
from raygent.core.store import open_store
from raygent.core.store.base import Store
from raygent.governance.audit import AuditModelInterceptor, AuditWriter
from raygent.router.router import Router
from raygent.telemetry.interceptors import TracingModelInterceptor
from raygent.telemetry.runtime import fleet_tracer

__all__ = ["RouterActor", "build_model_chain"]


def build_model_chain(router: Router, *, store: Store, tracer: Tracer, clock: Clock) -> ModelStage:
    """The one model-call chain: tracing outermost (it times everything), then audit, then the router."""
    return chain_model(
        router, [TracingModelInterceptor(tracer), AuditModelInterceptor(AuditWriter(store, clock))]
    )


class RouterActor:
    """Deployed by ``raygent.serve.app`` as the ``router`` deployment."""

    def __init__(self, fleet: Fleet) -> None:
        clock = SystemClock()
        self._provider, tracer = fleet_tracer(fleet, "router")
        self._store = open_store(fleet)
        self._router = Router.from_fleet(fleet, clock=clock)
        self._chain = build_model_chain(self._router, store=self._store, tracer=tracer, clock=clock)

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        return await self._chain.call_model(inp)

    async def aclose(self) -> None:
        await self._router.aclose()
        await self._store.close()
        self._provider.shutdown()
