"""The agent and router deployments as the serving layer runs them.

:class:`ServedAgent` is an :class:`~raygent.actors.agent.AgentActor` that also reports which replica
ran a run (``run_served``) and streams a run's steps and token deltas (``run_events``).
:class:`ServedRouter` is a :class:`~raygent.router.actor.RouterActor` that can stream a model call:
the call goes through the same interceptor chain (tracing, audit) as ``call_model``, with a terminal
stage that consumes the router's stream and forwards each text delta as it arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from raygent.actors.agent import AgentActor
from raygent.actors.steploop import RunHooks
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.errors import ModelError
from raygent.core.interceptors import ModelCallInput, ModelCallOutput, ModelStage
from raygent.core.remote import unwrap_remote_error
from raygent.core.runs import RunInput
from raygent.router.actor import RouterActor, build_model_chain
from raygent.router.model import StreamDelta
from raygent.router.router import Router
from raygent.serve.events import Final, RunEvent, ServedRun, bridge

__all__ = [
    "RemoteStreamingModelStage",
    "ServedAgent",
    "ServedRouter",
    "StreamingTerminal",
    "current_replica_id",
]

TextSink = Callable[[str], Awaitable[None]]


def current_replica_id() -> str | None:
    """The Serve replica this code runs in, or None outside Serve."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # not inside a replica (tests, `raygent run` helpers)
        return None


class StreamingTerminal(ModelStage):
    """The chain's terminal stage for a streamed call: forwards deltas, returns the final output."""

    def __init__(self, router: Router, on_delta: TextSink) -> None:
        self._router = router
        self._on_delta = on_delta

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        final: ModelCallOutput | None = None
        async for event in self._router.stream_model(inp):
            if isinstance(event, StreamDelta):
                await self._on_delta(event.text)
            else:
                final = event
        if final is None:
            raise ModelError("the model stream ended without a final response")
        return final


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


class RemoteStreamingModelStage(ModelStage):
    """Agent side of a streamed model call: ``stream_model`` on the router, deltas to ``on_delta``."""

    def __init__(self, stream_handle: Any, on_delta: TextSink) -> None:
        self._handle = stream_handle  # router handle with options(stream=True)
        self._on_delta = on_delta

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        final: ModelCallOutput | None = None
        gen = self._handle.stream_model.remote(inp)
        try:
            async for event in gen:
                if isinstance(event, StreamDelta):
                    await self._on_delta(event.text)
                else:
                    final = event
        except BaseException as exc:
            gen.cancel()  # the router stops generating for a run that is gone
            if isinstance(exc, Exception):
                raise unwrap_remote_error(exc) from None
            raise
        if final is None:
            raise ModelError("the router's stream ended without a final response")
        return final


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
        yield RunEvent(
            "start",
            {
                "run_id": req.run_id,
                "session_id": req.session_id,
                "agent": req.agent,
                "replica": self._replica,
            },
        )

        async def produce(emit: Callable[[RunEvent], Awaitable[None]]) -> Any:
            async def on_step(step: dict[str, Any]) -> None:
                await emit(RunEvent("step", step))

            async def on_delta(text: str) -> None:
                await emit(RunEvent("delta", {"text": text}))

            hooks = RunHooks(on_step=on_step, model=RemoteStreamingModelStage(self._router_stream, on_delta))
            return await self._loop.run(req, hooks)

        async for item in bridge(produce):
            yield RunEvent("done", item.value) if isinstance(item, Final) else item
