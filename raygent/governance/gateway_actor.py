"""The gateway actor: a pool of replicas, each running the tool-call interceptor chain around the
ToolGateway. Delegated agents are reached through Serve handles looked up by name."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Tracer

from raygent.core.clock import Clock, SystemClock
from raygent.core.config import Fleet
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolStage, chain_tool
from raygent.core.remote import RemoteAgentInvoker
from raygent.core.store import open_store
from raygent.core.store.base import Store
from raygent.governance.audit import AuditToolInterceptor, AuditWriter
from raygent.governance.gateway import ToolGateway
from raygent.telemetry.interceptors import TracingToolInterceptor
from raygent.telemetry.runtime import fleet_tracer

__all__ = ["GatewayActor", "agent_deployment_name", "build_tool_chain"]


def build_tool_chain(gateway: ToolGateway, *, store: Store, tracer: Tracer, clock: Clock) -> ToolStage:
    """The one tool-call chain: tracing outermost, then audit, then the gateway's checks and execution."""
    return chain_tool(
        gateway, [TracingToolInterceptor(tracer), AuditToolInterceptor(AuditWriter(store, clock))]
    )


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

        gateway = ToolGateway(fleet, invoker=RemoteAgentInvoker(resolve), clock=clock)
        self._chain = build_tool_chain(gateway, store=self._store, tracer=tracer, clock=clock)

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        return await self._chain.call_tool(inp)
