"""Model stages for streamed calls: they forward the answer's text deltas as they arrive.

:class:`StreamingTerminal` ends a model chain in the process that holds the :class:`Router` (the router
deployment, or a fleet served in one process). :class:`RemoteStreamingModelStage` is the agent side of
a streamed call to the router deployment; agent replicas and stateful session actors both use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from raygent.core.errors import ModelError
from raygent.core.interceptors import ModelCallInput, ModelCallOutput, ModelStage
from raygent.core.remote import unwrap_remote_error
from raygent.router.model import StreamDelta
from raygent.router.router import Router

__all__ = ["RemoteStreamingModelStage", "StreamingModel", "StreamingTerminal", "TextSink"]

TextSink = Callable[[str], Awaitable[None]]
# Builds the model stage of one streamed run, given where that run's text deltas go.
StreamingModel = Callable[[TextSink], ModelStage]


class StreamingTerminal(ModelStage):
    """The chain's terminal stage for a streamed call: forwards deltas, returns the final output."""

    def __init__(self, router: Router, on_delta: TextSink) -> None:
        self._router = router
        self._on_delta = on_delta

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        return _final(await _forward(self._router.stream_model(inp), self._on_delta), "the model stream")


class RemoteStreamingModelStage(ModelStage):
    """Agent side of a streamed model call: ``stream_model`` on the router, deltas to ``on_delta``."""

    def __init__(self, stream_handle: Any, on_delta: TextSink) -> None:
        self._handle = stream_handle  # router handle with options(stream=True)
        self._on_delta = on_delta

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        gen = self._handle.stream_model.remote(inp)
        try:
            final = await _forward(gen, self._on_delta)
        except BaseException as exc:
            gen.cancel()  # the router stops generating for a run that is gone
            if isinstance(exc, Exception):
                raise unwrap_remote_error(exc) from None
            raise
        return _final(final, "the router's stream")


async def _forward(
    events: AsyncIterator[StreamDelta | ModelCallOutput], on_delta: TextSink
) -> ModelCallOutput | None:
    """Send each text delta of a streamed call to ``on_delta``; returns the call's final output."""
    final: ModelCallOutput | None = None
    async for event in events:
        if isinstance(event, StreamDelta):
            await on_delta(event.text)
        else:
            final = event
    return final


def _final(final: ModelCallOutput | None, what: str) -> ModelCallOutput:
    if final is None:
        raise ModelError(f"{what} ended without a final response")
    return final
