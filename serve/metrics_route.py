"""``/metrics`` (Prometheus text for the whole fleet) and the detector's state, on the HTTP API.

The ingress records one event per run request (agent, status, latency: a pure ASGI middleware, so
streamed runs are timed to their last byte) and reports its queue depths as gauges; the router and the
gateway record model and tool calls in their own processes. Everything meets in the fleet's telemetry
hub; ``/metrics`` asks the hub for the aggregate and adds what is read at scrape time from shared state
(approvals pending, budget remaining).

Installed on the app by :func:`install_metrics` (one line in :func:`raygent.serve.api.build_api`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from raygent.core.budget import BudgetLedger, open_ledger
from raygent.core.config import Fleet
from raygent.serve.auth import route_path
from raygent.telemetry.client import HubPort, LocalHubPort, RayHubPort, TelemetryClient
from raygent.telemetry.hub import TelemetryHub
from raygent.telemetry.metrics import Gauge, MetricEvent
from raygent.telemetry.runtime import fleet_metrics, in_ray_actor

if TYPE_CHECKING:
    from raygent.governance.approvals import ApprovalBook
    from raygent.serve.api import ApiService

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "RunRequestMetrics",
    "ScrapeGauges",
    "attach_hub",
    "install_metrics",
    "metrics_router",
]

log = logging.getLogger("raygent.serve")

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_RUNS = re.compile(r"^/v1/agents/(?P<agent>[^/]+)/runs/?$")


class RunRequestMetrics:
    """Pure ASGI middleware: one ``http`` event per ``POST /v1/agents/{agent}/runs``."""

    def __init__(self, app: ASGIApp, client: TelemetryClient, fleet: Fleet) -> None:
        self._app = app
        self._client = client
        self._agents = frozenset(fleet.agents)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _RUNS.match(route_path(scope)) if scope["type"] == "http" else None
        if match is None or scope.get("method") != "POST":
            await self._app(scope, receive, send)
            return
        # An unknown agent's 404 is counted under one label: a client must not mint label values.
        agent = match["agent"] if match["agent"] in self._agents else "_unknown"
        status = 500
        t0, ts = time.monotonic(), time.time()

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, watch)
        finally:
            event = MetricEvent(
                kind="http",
                agent=agent,
                name="runs",
                latency_s=time.monotonic() - t0,
                ts=ts,
                status=status,
                error=status >= 500,
            )
            self._client.record(event)


_HUB_ATTR = "_raygent_telemetry_hub"


def attach_hub(service: ApiService, hub: HubPort) -> None:
    """Use ``hub`` for ``service``'s app (an in-process fleet sharing one hub with its chains)."""
    setattr(service, _HUB_ATTR, hub)


def _hub_for(service: ApiService) -> HubPort:
    attached: HubPort | None = getattr(service, _HUB_ATTR, None)
    if attached is not None:
        return attached
    if in_ray_actor():
        return RayHubPort(service.fleet)
    # Outside Ray (tests, an ASGI app run directly) the ingress is its own little fleet.
    return LocalHubPort(TelemetryHub(service.fleet.telemetry, store=service.store, clock=service.clock))


def _queue_gauges(service: ApiService, replica: str) -> list[Gauge]:
    serving = service.serving
    gauges = [
        Gauge(
            "raygent_async_pending",
            (("replica", replica),),
            float(serving.runner.pending),
            "Async runs accepted and not finished, per ingress replica.",
        ),
    ]
    for agent, stats in serving.admission.stats().items():
        for priority, count in stats["inflight"].items():
            labels = (("agent", agent), ("priority", str(priority)), ("replica", replica))
            gauges.append(
                Gauge(
                    "raygent_queue_depth",
                    labels,
                    float(count),
                    "Runs in flight or queued, per ingress replica.",
                )
            )
    return gauges


class ScrapeGauges:
    """Values read from shared state when ``/metrics`` is scraped: approvals pending, budget remaining.

    The approval book and the budget ledger are opened on the first scrape and kept.
    """

    def __init__(self, service: ApiService) -> None:
        self._service = service
        self._book: ApprovalBook | None = None
        self._ledger: BudgetLedger | None = None

    async def gauges(self) -> list[Gauge]:
        fleet = self._service.fleet
        gauges: list[Gauge] = []
        if fleet.policies is not None or fleet.telemetry.detector is not None:
            try:
                pending = await self._pending_approvals()
                gauges.append(
                    Gauge(
                        "raygent_approvals_pending",
                        (),
                        float(pending),
                        "Tool calls held for a person's decision.",
                    )
                )
            except Exception:  # a scrape must not fail because one source did
                log.exception("could not count pending approvals")
        if fleet.router.budgets.enabled:
            try:
                gauges.extend(await self._budget_gauges())
            except Exception:
                log.exception("could not read the budget ledger")
        return gauges

    async def _pending_approvals(self) -> int:
        if self._book is None:
            from raygent.governance.runtime import Governance

            service = self._service
            self._book = Governance.open(service.fleet, store=service.store, clock=service.clock).approvals
        return len(await self._book.find_all(status="pending", limit=100_000))

    async def _budget_gauges(self) -> list[Gauge]:
        fleet = self._service.fleet
        budgets = fleet.router.budgets
        if self._ledger is None:
            self._ledger = open_ledger(fleet)
        gauges: list[Gauge] = []
        for agent in fleet.agents:
            limit = budgets.agents.get(agent, budgets.per_agent)
            if limit is None:
                continue
            spend = await self._ledger.spend(f"agent:{agent}")
            labels = (("agent", agent),)
            if limit.max_usd is not None:
                left = max(0.0, limit.max_usd - spend.spent_usd - spend.reserved_usd)
                gauges.append(
                    Gauge("raygent_budget_remaining_usd", labels, left, "USD an agent may still spend.")
                )
            if limit.max_tokens is not None:
                left_tokens = max(0, limit.max_tokens - spend.spent_tokens - spend.reserved_tokens)
                gauges.append(
                    Gauge(
                        "raygent_budget_remaining_tokens",
                        labels,
                        float(left_tokens),
                        "Tokens an agent may still spend.",
                    )
                )
        return gauges


def metrics_router(service: ApiService, hub: HubPort, client: TelemetryClient | None) -> APIRouter:
    """``GET /metrics``, ``GET /v1/telemetry/anomalies`` and ``GET /v1/telemetry/controls``."""
    router = APIRouter()
    scrape = ScrapeGauges(service)

    @router.get("/metrics", response_class=PlainTextResponse, tags=["telemetry"])
    async def metrics() -> PlainTextResponse:
        """Prometheus text exposition of the whole fleet."""
        if client is not None:
            await client.flush()  # this replica's own latest requests are in the answer
        text = await hub.render(await scrape.gauges())
        return PlainTextResponse(text, media_type=PROMETHEUS_CONTENT_TYPE)

    @router.get("/v1/telemetry/anomalies", tags=["telemetry"])
    async def anomalies() -> JSONResponse:
        """The latest detections with the actions taken (also in the audit trail)."""
        return JSONResponse({"anomalies": await hub.recent()})

    @router.get("/v1/telemetry/controls", tags=["telemetry"])
    async def controls() -> JSONResponse:
        """Throttled agents, rerouted agents and quarantined sessions in force now."""
        snapshot = await hub.snapshot()
        body: dict[str, Any] = snapshot.to_json()
        return JSONResponse(body)

    return router


def install_metrics(
    api: FastAPI, service: ApiService, *, hub: HubPort | None = None
) -> TelemetryClient | None:
    """Add the request-metrics middleware and the telemetry routes to ``api``.

    Args:
        api: The app being built.
        service: The API service (fleet, store, serving state).
        hub: The hub to use (default: the fleet's hub actor under Ray, a hub of its own otherwise).

    Returns:
        The ingress's telemetry client, or ``None`` when the fleet turns metrics off.
    """
    hub = hub or _hub_for(service)
    client = fleet_metrics(service.fleet, "ingress", hub=hub, clock=service.clock)
    if client is not None:
        replica = f"ingress-{os.getpid()}"
        client.add_gauges(lambda: _queue_gauges(service, replica))
        api.add_middleware(RunRequestMetrics, client=client, fleet=service.fleet)
    api.include_router(metrics_router(service, hub, client))
    return client
