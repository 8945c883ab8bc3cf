"""What a run asks for and what it gives back; crosses process boundaries (ingress → agent → gateway)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from raygent.core.store.base import RunState

__all__ = ["AgentInvoker", "RunEvent", "RunInput", "RunOutput"]


@dataclass(frozen=True, slots=True)
class RunInput:
    run_id: str
    agent: str
    input: str
    session_id: str
    deadline_ts: float  # wall-clock epoch seconds
    traceparent: str | None = None
    caller_chain: tuple[str, ...] = ()  # agents that delegated to this one, outermost first
    latency_budget_ms: float | None = None
    # Governance: the authenticated caller and the end user the run acts for (policies see both); a
    # resumed run continues from where it parked on a held tool call.
    requester: str = ""
    end_user: str = ""
    resume: bool = False


@dataclass(frozen=True, slots=True)
class RunOutput:
    run_id: str
    agent: str
    session_id: str
    status: RunState
    output: str | None
    steps: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    trace_id: str | None = None
    error: dict[str, Any] | None = None  # RFC 9457 problem document when status is not completed

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "agent": self.agent,
            "session_id": self.session_id,
            "status": self.status,
            "output": self.output,
            "steps": self.steps,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "total_tokens": self.input_tokens + self.output_tokens,
            },
            "cost_usd": round(self.cost_usd, 8),
            "trace_id": self.trace_id,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One event of a streamed run.

    ``start``: ``{"run_id", "session_id", "agent", "replica"}``; ``step``: a step as recorded on the run;
    ``delta``: ``{"text"}`` of the model's answer as it is generated; ``done``: the :class:`RunOutput`.
    """

    kind: Literal["start", "step", "delta", "done"]
    data: Any


class AgentInvoker(Protocol):
    """Runs an agent by name; the gateway uses it for delegation (Serve handles or in-process loops)."""

    async def invoke(self, run: RunInput) -> RunOutput: ...
