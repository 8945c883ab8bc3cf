"""The ``Model`` protocol: the one wire-level interface every backend implements.

Messages and tool schemas go in; text or tool calls plus token usage come out. ``stream`` yields text
deltas and ends with one :class:`StreamDone` carrying the complete response, so a streaming consumer and
a non-streaming one see the same final result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from raygent.core.messages import Message, ToolCall, ToolSchema, Usage

__all__ = [
    "FinishReason",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "StreamDelta",
    "StreamDone",
    "StreamEvent",
]

FinishReason = Literal["stop", "tool_calls", "length", "error"]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    messages: tuple[Message, ...]
    tools: tuple[ToolSchema, ...] = ()
    max_output_tokens: int | None = None
    temperature: float | None = None
    timeout_s: float | None = None
    json_schema: dict[str, Any] | None = None  # structured output, where the backend supports it


@dataclass(frozen=True, slots=True)
class ModelResponse:
    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    model: str
    finish_reason: FinishReason
    latency_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamDelta:
    text: str


@dataclass(frozen=True, slots=True)
class StreamDone:
    response: ModelResponse


StreamEvent = StreamDelta | StreamDone


@runtime_checkable
class Model(Protocol):
    """A chat model backend. Implementations raise :class:`raygent.core.errors.ModelError` subclasses."""

    @property
    def name(self) -> str: ...

    async def complete(self, request: ModelRequest) -> ModelResponse: ...

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...
