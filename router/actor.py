"""The routing actor: one process that owns the model backends, their live state and the model-call
interceptor chain (tracing, then audit, then budgets, around the router's choice of backend)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from opentelemetry.trace import Tracer

from raygent.core.budget import BudgetLedger, open_ledger
from raygent.core.clock import Clock, SystemClock
from raygent.core.config import Fleet
from raygent.core.interceptors import (
    ModelCallInput,
    ModelCallOutput,
    ModelInterceptor,
    ModelStage,
    chain_model,
)
from raygent.core.store import open_store
from raygent.core.store.base import Store
from raygent.governance.audit import AuditModelInterceptor, AuditWriter
from raygent.router.budget import BudgetModelInterceptor
from raygent.router.router import Router
from raygent.telemetry.control import MetricsModelInterceptor
from raygent.telemetry.interceptors import TracingModelInterceptor
from raygent.telemetry.runtime import fleet_metrics, fleet_tracer

__all__ = ["RouterActor", "build_model_chain"]


def build_model_chain(
    router: ModelStage,
    *,
    store: Store,
    tracer: Tracer,
    clock: Clock,
    budget: BudgetModelInterceptor | None = None,
    metrics: ModelInterceptor | None = None,
) -> ModelStage:
    """The one model-call chain: tracing outermost (it times everything), then audit (so a budget
    refusal is audited), then metrics with the detector's throttle/reroute controls, then budgets, then
    the router."""
    interceptors: list[ModelInterceptor] = [
        TracingModelInterceptor(tracer),
        AuditModelInterceptor(AuditWriter(store, clock)),
    ]
    if metrics is not None:
        interceptors.append(metrics)
    if budget is not None:
        interceptors.append(budget)
    return chain_model(router, interceptors)


class RouterActor:
    """Deployed by ``raygent.serve.app`` as the ``router`` deployment.

    Args:
        fleet: The fleet; its ``router:`` section configures routes, resilience and budgets.
        vllm: Handles of the fleet's vLLM deployments by model key (their backends call them).
    """

    def __init__(self, fleet: Fleet, vllm: Mapping[str, Any] | None = None) -> None:
        clock = SystemClock()
        self._provider, tracer = fleet_tracer(fleet, "router")
        self._store = open_store(fleet)
        overrides = None
        if vllm:
            from raygent.router.vllm_engine import serve_models

            overrides = serve_models(vllm)
        self._router = Router.from_fleet(fleet, clock=clock, models=overrides)
        self._fleet = fleet
        self._ledger: BudgetLedger | None = None
        if fleet.router.budgets.enabled:
            self._ledger = open_ledger(fleet)
        self._telemetry = fleet_metrics(fleet, "router", clock=clock)
        self._chain = build_model_chain(
            self._router,
            store=self._store,
            tracer=tracer,
            clock=clock,
            budget=self._budget_stage(),
            metrics=self._metrics_stage(),
        )

    # Interceptors are linked into one chain (``next``): every chain, e.g. one per streamed call, needs
    # its own instances. Both share the ledger and the metrics client, so limits hold across chains.
    def _budget_stage(self) -> BudgetModelInterceptor | None:
        if self._ledger is None:
            return None
        return BudgetModelInterceptor(self._ledger, self._fleet.router.budgets, self._fleet.models.values())

    def _metrics_stage(self) -> ModelInterceptor | None:
        return MetricsModelInterceptor(self._telemetry) if self._telemetry is not None else None

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        return await self._chain.call_model(inp)

    async def backend_stats(self) -> dict[str, dict[str, Any]]:
        """Live stats of every backend (latency percentiles, TTFT, tokens/s, errors, in-flight, prices)."""
        return {name: asdict(snap) for name, snap in self._router.stats().items()}

    async def aclose(self) -> None:
        await self._router.aclose()
        if self._ledger is not None:
            await self._ledger.close()
        if self._telemetry is not None:
            await self._telemetry.aclose()
        await self._store.close()
        self._provider.shutdown()
