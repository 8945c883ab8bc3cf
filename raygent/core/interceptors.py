"""Interceptor chains around model calls (in the router) and tool calls (in the gateway).

Temporal-style: one input dataclass per hook, each interceptor wraps the next and may inspect, change,
refuse or observe the call. The chain is invoked from exactly one site per stage, so no hook is missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from raygent.core.messages import Message, ToolCall, ToolSchema, Usage

__all__ = [
    "CallContext",
    "ModelCallInput",
    "ModelCallOutput",
    "ModelInterceptor",
    "ModelStage",
    "ToolCallInput",
    "ToolCallOutput",
    "ToolInterceptor",
    "ToolStage",
    "chain_model",
    "chain_tool",
]


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling, for which run and step; travels with every call across processes."""

    run_id: str
    session_id: str
    agent: str
    identity: str
    step: int = 0
    traceparent: str | None = None  # W3C trace context of the caller's span
    caller_chain: tuple[str, ...] = ()  # agents above this one, outermost first
    deadline_ts: float | None = None  # wall-clock epoch seconds; monotonic clocks differ per process
    tier: str = "standard"
    prompt_id: str = ""
    prompt_version: str = ""
    prompt_sha256: str = ""
    # Who the run is for (governance): the authenticated caller's subject and the end user it acts for.
    requester: str = ""
    end_user: str = ""

    def child(self, **changes: Any) -> CallContext:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ModelCallInput:
    ctx: CallContext
    messages: tuple[Message, ...]
    tools: tuple[ToolSchema, ...] = ()
    latency_budget_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ModelCallOutput:
    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    backend: str
    model: str
    finish_reason: str
    cost_usd: float
    latency_s: float
    route_reason: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolCallInput:
    ctx: CallContext
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolCallOutput:
    call_id: str
    name: str
    result: Any  # JSON-serialisable
    is_error: bool = False
    latency_s: float = 0.0
    # Usage and cost spent below this call (a delegated agent's model calls).
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0


class ModelStage:
    """Anything that can execute a model call: the terminal backend call or an interceptor."""

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        raise NotImplementedError


class ToolStage:
    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        raise NotImplementedError


class ModelInterceptor(ModelStage):
    """Base interceptor: passes through to ``next``. Subclasses override ``call_model``."""

    next: ModelStage

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        return await self.next.call_model(inp)


class ToolInterceptor(ToolStage):
    next: ToolStage

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        return await self.next.call_tool(inp)


def chain_model(terminal: ModelStage, interceptors: Sequence[ModelInterceptor]) -> ModelStage:
    """Wrap ``terminal``; the first interceptor in the list is the outermost."""
    stage = terminal
    for interceptor in reversed(interceptors):
        interceptor.next = stage
        stage = interceptor
    return stage


def chain_tool(terminal: ToolStage, interceptors: Sequence[ToolInterceptor]) -> ToolStage:
    stage = terminal
    for interceptor in reversed(interceptors):
        interceptor.next = stage
        stage = interceptor
    return stage
