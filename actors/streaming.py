"""A run as a stream of events: the step loop's progress reports turned into ``step`` and ``delta``
events, then ``done`` with the run's output.

One site for every place a run is streamed: a stateless agent's replica, a stateful session's actor
(:class:`~raygent.actors.stateful.SessionHost`) and a fleet served in one process. The run itself is
the same call as an unstreamed one, with :class:`~raygent.actors.steploop.RunHooks` added, so journaling,
checkpoints and cancellation behave the same.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from raygent.actors.steploop import RunHooks
from raygent.core.runs import RunEvent, RunInput, RunOutput
from raygent.core.streams import Final, bridge
from raygent.router.streaming import StreamingModel

__all__ = ["start_event", "stream_run"]


def start_event(req: RunInput, replica: str | None) -> RunEvent:
    """The first event of a streamed run, sent by whoever accepted it before the run starts."""
    return RunEvent(
        "start", {"run_id": req.run_id, "session_id": req.session_id, "agent": req.agent, "replica": replica}
    )


async def stream_run(
    run: Callable[[RunHooks], Awaitable[RunOutput]], *, streaming: StreamingModel | None = None
) -> AsyncGenerator[RunEvent, None]:
    """Run ``run(hooks)``, yielding a ``step`` event per step and, when ``streaming`` builds the model
    stage, a ``delta`` event per piece of the model's text; then ``done`` with the output.

    Closing the stream early (the client went away) cancels the run, which records it as cancelled.
    """

    async def produce(emit: Callable[[RunEvent], Awaitable[None]]) -> RunOutput:
        async def on_step(step: dict[str, Any]) -> None:
            await emit(RunEvent("step", step))

        async def on_delta(text: str) -> None:
            await emit(RunEvent("delta", {"text": text}))

        model = streaming(on_delta) if streaming is not None else None
        return await run(RunHooks(on_step=on_step, model=model))

    # aclosing: a consumer that closes this stream at a yield closes the bridge too, which cancels the run
    # now (left to the garbage collector, the run would go on).
    async with aclosing(bridge(produce)) as items:
        async for item in items:
            yield RunEvent("done", item.value) if isinstance(item, Final) else item
