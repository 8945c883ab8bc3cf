"""How the ingress reaches agents: an :class:`AgentPort` runs a run or streams its events.

:class:`HandleAgentPort` goes through Serve handles (the deployed graph); :class:`LocalAgentPort` runs
the same loops and interceptor chains in this process (unit tests, tools). Cancelling the caller's
task cancels the run where it executes, which records it as ``cancelled``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, Protocol

from opentelemetry.trace import Tracer

from raygent.actors.stateful import LocalStatefulAgent
from raygent.actors.steploop import AgentLoop
from raygent.actors.streaming import start_event, stream_run
from raygent.core.budget import open_ledger
from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import NotFoundError
from raygent.core.interceptors import ModelStage
from raygent.core.remote import unwrap_remote_error
from raygent.core.runs import AgentInvoker, RunInput, RunOutput
from raygent.core.store.base import Store
from raygent.governance.gateway import ToolGateway
from raygent.governance.gateway_actor import build_tool_chain
from raygent.router.actor import build_model_chain
from raygent.router.budget import BudgetModelInterceptor
from raygent.router.router import Router
from raygent.router.streaming import StreamingTerminal, TextSink
from raygent.serve.events import RunEvent, ServedRun

__all__ = ["AgentPort", "HandleAgentPort", "InvokerPort", "LocalAgentPort"]


class AgentPort(Protocol):
    async def run(self, req: RunInput) -> ServedRun: ...

    def events(self, req: RunInput) -> AsyncIterator[RunEvent]: ...


class InvokerPort:
    """Any :class:`~raygent.core.runs.AgentInvoker` as a port: no replica id, and a streamed run
    sends only its start and its end (no step or token events)."""

    def __init__(self, invoker: AgentInvoker) -> None:
        self._invoker = invoker

    async def run(self, req: RunInput) -> ServedRun:
        return ServedRun(await self._invoker.invoke(req))

    async def events(self, req: RunInput) -> AsyncIterator[RunEvent]:
        yield RunEvent("start", {"run_id": req.run_id, "session_id": req.session_id, "agent": req.agent})
        yield RunEvent("done", await self._invoker.invoke(req))


class HandleAgentPort:
    """Agents behind Serve deployment handles, by agent name."""

    def __init__(self, handles: Mapping[str, Any]) -> None:
        self._handles = dict(handles)
        self._streams: dict[str, Any] = {}

    def _handle(self, agent: str) -> Any:
        try:
            return self._handles[agent]
        except KeyError:
            raise NotFoundError(f"there is no agent named {agent!r}") from None

    async def run(self, req: RunInput) -> ServedRun:
        response = self._handle(req.agent).run_served.remote(req)
        try:
            served: ServedRun = await response
        except asyncio.CancelledError:
            # Awaiting a Serve response and being cancelled does not cancel the replica's work.
            response.cancel()
            raise
        except Exception as exc:
            raise unwrap_remote_error(exc) from None
        return served

    async def events(self, req: RunInput) -> AsyncIterator[RunEvent]:
        stream = self._streams.get(req.agent)
        if stream is None:
            stream = self._streams[req.agent] = self._handle(req.agent).options(stream=True)
        gen = stream.run_events.remote(req)
        finished = False
        try:
            async for event in gen:
                yield event
            finished = True
        except Exception as exc:
            raise unwrap_remote_error(exc) from None
        finally:
            if not finished:
                gen.cancel()  # the consumer went away or failed: stop the run where it executes


class LocalAgentPort:
    """Every agent of a fleet in this process, with the same chains as the deployed graph; a stateful
    agent keeps its sessions live here (:class:`~raygent.actors.stateful.LocalStatefulAgent`)."""

    def __init__(self, fleet: Fleet, *, store: Store, tracer: Tracer, clock: Clock) -> None:
        self.router = Router.from_fleet(fleet, clock=clock)
        self._fleet, self._store, self._tracer, self._clock = fleet, store, tracer, clock
        # Budgets as in the router deployment: one ledger, a fresh interceptor per chain.
        self._ledger = open_ledger(fleet) if fleet.router.budgets.enabled else None
        model_chain = build_model_chain(
            self.router, store=store, tracer=tracer, clock=clock, budget=self._budget_stage()
        )
        gateway = ToolGateway(fleet, invoker=self, clock=clock)
        self.gateway = gateway  # kept: its executors' status listeners (the reply resumer) and aclose
        tool_chain = build_tool_chain(gateway, store=store, tracer=tracer, clock=clock)
        self._loops = {
            name: AgentLoop(
                fleet, name, store=store, model=model_chain, tools=tool_chain, tracer=tracer, clock=clock
            )
            for name, spec in fleet.agents.items()
            if not spec.stateful
        }
        self._stateful = {
            name: LocalStatefulAgent(
                fleet,
                name,
                store=store,
                model=model_chain,
                tools=tool_chain,
                tracer=tracer,
                clock=clock,
                streaming=self._streaming_chain,
            )
            for name, spec in fleet.agents.items()
            if spec.stateful
        }

    def _budget_stage(self) -> BudgetModelInterceptor | None:
        if self._ledger is None:
            return None
        return BudgetModelInterceptor(self._ledger, self._fleet.router.budgets, self._fleet.models.values())

    def _streaming_chain(self, on_delta: TextSink) -> ModelStage:
        """The model chain of one streamed run: its terminal forwards the run's text deltas."""
        return build_model_chain(
            StreamingTerminal(self.router, on_delta),
            store=self._store,
            tracer=self._tracer,
            clock=self._clock,
            budget=self._budget_stage(),
        )

    def _runner(self, agent: str) -> AgentLoop | LocalStatefulAgent:
        runner = self._loops.get(agent) or self._stateful.get(agent)
        if runner is None:
            raise NotFoundError(f"there is no agent named {agent!r}")
        return runner

    async def invoke(self, run: RunInput) -> RunOutput:
        """Delegation entry (the gateway's :class:`~raygent.core.runs.AgentInvoker`)."""
        return await self._runner(run.agent).run(run)

    async def run(self, req: RunInput) -> ServedRun:
        return ServedRun(await self._runner(req.agent).run(req), "local")

    async def events(self, req: RunInput) -> AsyncIterator[RunEvent]:
        runner = self._runner(req.agent)
        yield start_event(req, "local")
        if isinstance(runner, LocalStatefulAgent):
            stream = runner.run_events(req)
        else:
            loop = runner
            stream = stream_run(lambda hooks: loop.run(req, hooks), streaming=self._streaming_chain)
        async with aclosing(stream) as events:
            async for event in events:
                yield event

    async def aclose(self) -> None:
        await self.router.aclose()
        if self._ledger is not None:
            await self._ledger.close()
