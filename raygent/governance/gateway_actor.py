"""The gateway actor: a pool of replicas, each running the tool-call interceptor chain around the
ToolGateway. Delegated agents are reached through Serve handles looked up by name."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from opentelemetry.trace import Tracer

from raygent.core.clock import Clock, SystemClock
from raygent.core.config import Fleet
from raygent.core.faults import FaultHook
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolStage, chain_tool
from raygent.core.remote import RemoteAgentInvoker
from raygent.core.store import open_store
from raygent.core.store.base import Store
from raygent.governance.audit import AuditToolInterceptor, AuditWriter
from raygent.governance.credentials import credential_stages
from raygent.governance.effects import EffectLedgerInterceptor, EffectReplayInterceptor
from raygent.governance.gateway import ToolGateway
from raygent.governance.quarantine import observed_tool_stages
from raygent.governance.runtime import Governance, governance_enabled
from raygent.telemetry.client import TelemetryClient
from raygent.telemetry.interceptors import TracingToolInterceptor
from raygent.telemetry.runtime import fleet_metrics, fleet_tracer, tool_redactor

__all__ = ["GatewayActor", "agent_deployment_name", "build_tool_chain"]

# How often a gateway replica looks for recorded replies whose parked run nobody resumed.
_REPLY_SWEEP_S = 30.0


def build_tool_chain(
    gateway: ToolGateway,
    *,
    store: Store,
    tracer: Tracer,
    clock: Clock,
    faults: FaultHook | None = None,
    telemetry: TelemetryClient | None = None,
) -> ToolStage:
    """The one tool-call chain: tracing outermost (arguments redacted), then the replay of side effects
    already done (exactly-once), then metrics and the detector's
    quarantine hold, then governance (identity/kill switch → RBAC → Cedar policy → validation → approval
    hold → spending limit; only what the fleet configures), then egress rules, then audit, then the effect
    ledger (exactly-once side effects; in a governed fleet it holds an in-doubt one for approval itself),
    then result redaction, then the gateway's checks and execution."""
    creds = credential_stages(gateway, store=store, clock=clock)
    writer = AuditWriter(store, clock, redactor=creds.redactor)
    observed = observed_tool_stages(gateway.fleet, telemetry, store=store, clock=clock)
    gov = (
        Governance.open(gateway.fleet, store=store, clock=clock)
        if governance_enabled(gateway.fleet)
        else None
    )
    governed = [] if gov is None else gov.tool_interceptors(invoker=gateway.invoker)
    # A governed fleet's in-doubt side effects go to a person through its approvals (see effects.py).
    book = None if gov is None else gov.approvals
    ledger = EffectLedgerInterceptor(gateway.fleet, store, clock, faults=faults, book=book, writer=writer)
    tracing = TracingToolInterceptor(tracer, redactor=tool_redactor(gateway.fleet))
    audit = AuditToolInterceptor(writer)
    # A side effect already done is answered from the ledger before governance decides (and counts) again.
    replay = EffectReplayInterceptor(gateway.fleet, store)
    outer = [tracing, replay, *observed, *creds.before_governance, *governed, *creds.before_audit]
    return chain_tool(gateway, [*outer, audit, ledger, *creds.innermost])


def agent_deployment_name(agent: str) -> str:
    return f"agent-{agent}"


class GatewayActor:
    """Deployed by ``raygent.serve.app`` as the ``gateway`` deployment."""

    def __init__(self, fleet: Fleet, app_name: str) -> None:
        clock = SystemClock()
        self._provider, tracer = fleet_tracer(fleet, "gateway")
        self._store = open_store(fleet)

        def resolve(agent: str) -> Any:
            from ray import serve  # imported here: the gateway logic itself does not depend on Ray

            return serve.get_deployment_handle(agent_deployment_name(agent), app_name=app_name)

        invoker = RemoteAgentInvoker(resolve)
        gateway = ToolGateway(fleet, invoker=invoker, clock=clock)
        self._gateway = gateway
        faults = FaultHook.for_fleet(fleet.faults, fleet.state_path("."))
        telemetry = fleet_metrics(fleet, "gateway", clock=clock)
        self._chain = build_tool_chain(
            gateway, store=self._store, tracer=tracer, clock=clock, faults=faults, telemetry=telemetry
        )
        # Tools with ``async_mode: park``: this replica resumes the runs whose reply it records.
        from raygent.integrations.resumer import ReplyResumer  # only fleets with mq tools need it

        self._resumer = ReplyResumer.for_gateway(gateway, store=self._store, invoker=invoker, clock=clock)
        self._resuming: asyncio.Task[None] | None = None

    async def check_health(self) -> None:
        # Serve calls this every few seconds on the replica's event loop: it (re)starts the reply resumer,
        # so a restarted gateway consumes the replies that waited in the durable reply queues and resumes
        # runs whose reply was recorded while no one resumed them, before any tool call arrives.
        if self._resumer is not None and (self._resuming is None or self._resuming.done()):
            self._resuming = asyncio.get_running_loop().create_task(self._resume_forever())

    async def _resume_forever(self) -> None:
        assert self._resumer is not None  # started only when the fleet has parking tools
        await self._resumer.start()
        await self._resumer.sweep_forever(_REPLY_SWEEP_S)

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        return await self._chain.call_tool(inp)

    async def revoke_credentials(self, identity: str, reason: str = "") -> dict[str, Any]:
        """Drop this replica's tokens and leases of ``identity`` now (other replicas drop theirs at the
        identity's next call, through the kill switch check)."""
        report = await self._gateway.credentials.revoke(identity, reason=reason)
        return asdict(report)
