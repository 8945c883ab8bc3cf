"""A whole fleet in one process: the same loops and interceptor chains as the Serve deployments,
without Ray. Used by unit tests and by anyone who wants to exercise a fleet's logic quickly."""

from __future__ import annotations

from opentelemetry.trace import Tracer

from raygent.actors.stateful import LocalStatefulAgent
from raygent.actors.steploop import AgentLoop
from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import NotFoundError
from raygent.core.faults import FaultHook
from raygent.core.interceptors import ModelStage
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store.base import Store
from raygent.governance.gateway import ToolGateway
from raygent.governance.gateway_actor import build_tool_chain
from raygent.router.actor import build_model_chain
from raygent.router.router import Router
from raygent.router.streaming import StreamingTerminal, TextSink
from raygent.telemetry.client import TelemetryClient
from raygent.telemetry.control import MetricsModelInterceptor

__all__ = ["InProcessFleet"]


class InProcessFleet:
    """Runs any agent of ``fleet`` in this process; delegation goes through the same gateway chain.

    Args:
        fleet: The loaded fleet.
        store: Store for sessions, runs and audit.
        tracer: Tracer for every span.
        clock: Time source.
        router: Router to use (default: built from the fleet's models).
        faults: Chaos tests only: kill points for stateful agents and the effect ledger.
        telemetry: Metrics client (events, detector controls) for the model and tool chains.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        store: Store,
        tracer: Tracer,
        clock: Clock,
        router: Router | None = None,
        faults: FaultHook | None = None,
        telemetry: TelemetryClient | None = None,
    ) -> None:
        self.router = router or Router.from_fleet(fleet, clock=clock)
        metrics = MetricsModelInterceptor(telemetry) if telemetry is not None else None
        model_chain = build_model_chain(self.router, store=store, tracer=tracer, clock=clock, metrics=metrics)
        router = self.router

        def streaming(on_delta: TextSink) -> ModelStage:
            # A streamed run's own chain: the terminal forwards that run's text deltas.
            terminal = StreamingTerminal(router, on_delta)
            return build_model_chain(terminal, store=store, tracer=tracer, clock=clock, metrics=metrics)

        gateway = ToolGateway(fleet, invoker=self, clock=clock)
        tool_chain = build_tool_chain(
            gateway, store=store, tracer=tracer, clock=clock, faults=faults, telemetry=telemetry
        )
        self._loops = {
            name: AgentLoop(
                fleet, name, store=store, model=model_chain, tools=tool_chain, tracer=tracer, clock=clock
            )
            for name in fleet.agents
        }

        # Stateful agents keep their live sessions here, checkpointed to the store after every step.
        self.stateful = {
            name: LocalStatefulAgent(
                fleet,
                name,
                store=store,
                model=model_chain,
                tools=tool_chain,
                tracer=tracer,
                clock=clock,
                faults=faults,
                streaming=streaming,
            )
            for name, spec in fleet.agents.items()
            if spec.stateful
        }

    async def invoke(self, run: RunInput) -> RunOutput:
        if run.agent in self.stateful:
            return await self.stateful[run.agent].run(run)
        loop = self._loops.get(run.agent)
        if loop is None:
            raise NotFoundError(f"there is no agent named {run.agent!r}")
        return await loop.run(run)

    async def aclose(self) -> None:
        await self.router.aclose()
