"""Stages that forward calls to another process through a Ray Serve handle.

Duck-typed on the handle (``handle.method.remote(arg)`` returns an awaitable), so this module does not
import Ray and the step loop stays testable without it. Errors raised remotely come back wrapped by Ray;
they are unwrapped so callers see the original raygent error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raygent.core.errors import OverloadedError, RaygentError
from raygent.core.interceptors import (
    ModelCallInput,
    ModelCallOutput,
    ModelStage,
    ToolCallInput,
    ToolCallOutput,
    ToolStage,
)
from raygent.core.runs import RunInput, RunOutput

__all__ = ["RemoteAgentInvoker", "RemoteModelStage", "RemoteToolStage", "unwrap_remote_error"]


def unwrap_remote_error(exc: BaseException) -> BaseException:
    """The original exception behind a Ray task error; Serve's queue-full error becomes OverloadedError."""
    if type(exc).__name__ == "BackPressureError":
        return OverloadedError("the agent's request queue is full; retry shortly", retry_after_s=1.0)
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RaygentError):
        return cause
    return exc


class RemoteModelStage(ModelStage):
    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        try:
            out: ModelCallOutput = await self._handle.call_model.remote(inp)
        except Exception as exc:
            raise unwrap_remote_error(exc) from None
        return out


class RemoteToolStage(ToolStage):
    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        try:
            out: ToolCallOutput = await self._handle.call_tool.remote(inp)
        except Exception as exc:
            raise unwrap_remote_error(exc) from None
        return out


class RemoteAgentInvoker:
    """Invokes agents through handles looked up by agent name (lazily: the graph has a cycle)."""

    def __init__(self, resolve: Callable[[str], Any]) -> None:
        self._resolve = resolve
        self._handles: dict[str, Any] = {}

    async def invoke(self, run: RunInput) -> RunOutput:
        handle = self._handles.get(run.agent)
        if handle is None:
            handle = self._handles[run.agent] = self._resolve(run.agent)
        try:
            out: RunOutput = await handle.run.remote(run)
        except Exception as exc:
            raise unwrap_remote_error(exc) from None
        return out
