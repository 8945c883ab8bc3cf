"""The agent and router deployments as the serving layer runs them.

:class:`ServedAgent` is an :class:`~raygent.actors.agent.AgentActor` that also reports which replica
ran a run (``run_served``) and streams a run's steps and token deltas (``run_events``).
:class:`ServedRouter` is a :class:`~raygent.router.actor.RouterActor` that can stream a model call:
the call goes through the same interceptor chain (tracing, audit) as ``call_model``, with a terminal
stage that consumes the router's stream and forwards each text delta as it arrives. Those streaming
stages live in :mod:`raygent.router.streaming` (stateful session actors use them too) and are
re-exported here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

from raygent.actors.agent import AgentActor
from raygent.actors.streaming import start_event, stream_run
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.interceptors import ModelCallInput, ModelCallOutput, ModelStage
from raygent.core.runs import RunInput
from raygent.router.actor import RouterActor, build_model_chain
from raygent.router.model import StreamDelta
from raygent.router.streaming import RemoteStreamingModelStage, StreamingTerminal, TextSink
from raygent.serve.events import Final, RunEvent, ServedRun, bridge

__all__ = [
    "RemoteStreamingModelStage",
    "ServedAgent",
    "ServedRouter",
    "StreamingTerminal",
    "current_replica_id",
]


def current_replica_id() -> str | None:
    """The Serve replica this code runs in, or None outside Serve."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # not inside a replica (tests, `raygent run` helpers)
        return None


class ServedRouter(RouterActor):
    """The ``router`` deployment: ``call_model`` as before, plus ``stream_model`` (a generator)."""

    def __init__(self, fleet: Fleet, vllm: Mapping[str, Any] | None = None) -> None:
        super().__init__(fleet, vllm)  # vllm: handles of the fleet's vLLM deployments (serve/app.py)
        self._clock = SystemClock()
        self._tracer = self._provider.get_tracer("raygent.router")

    async def stream_model(self, inp: ModelCallInput) -> AsyncIterator[StreamDelta | ModelCallOutput]:
        """Yield the call's text deltas, then its :class:`ModelCallOutput` (audited and traced)."""

        async def produce(emit: Callable[[StreamDelta], Awaitable[None]]) -> ModelCallOutput:
            async def on_delta(text: str) -> None:
                await emit(StreamDelta(text))

            # A chain per call: the terminal carries this call's sink, and chains are cheap to build.
            chain = build_model_chain(
                StreamingTerminal(self._router, on_delta),
                store=self._store,
                tracer=self._tracer,
                clock=self._clock,
                # A streamed step is metered and budgeted like any other: same ledger, same metrics.
                budget=self._budget_stage(),
                metrics=self._metrics_stage(),
            )
            return await chain.call_model(inp)

        async for item in bridge(produce):
            yield item.value if isinstance(item, Final) else item


class ServedAgent(AgentActor):
    """An agent deployment's replica as the ingress calls it (``run`` stays for delegation)."""

    def __init__(self, fleet: Fleet, agent: str, router: Any, gateway: Any) -> None:
        super().__init__(fleet, agent, router, gateway)
        self._router_stream = router.options(stream=True)
        self._replica = current_replica_id()

    async def run_served(self, req: RunInput) -> ServedRun:
        return ServedRun(await self.run(req), self._replica)

    async def run_events(self, req: RunInput) -> AsyncIterator[RunEvent]:
        """Stream a run: ``start``, then ``step`` and ``delta`` events as they happen, then ``done``."""
        yield start_event(req, self._replica)

        def streaming(on_delta: TextSink) -> ModelStage:
            return RemoteStreamingModelStage(self._router_stream, on_delta)

        events = stream_run(lambda hooks: self._loop.run(req, hooks), streaming=streaming)
        async with aclosing(events):
            async for event in events:
                yield event
