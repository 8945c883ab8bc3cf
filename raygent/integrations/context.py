"""What a tool implementation receives besides its arguments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ToolContext"]


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Call metadata for a tool. ``idempotency_key`` is deterministic per (run, step, call index), so a
    tool that honours it applies a side effect once even when the call is retried. ``traceparent`` is the
    W3C trace context of the tool call, for tools that carry it onwards (message headers)."""

    tool_call_id: str
    idempotency_key: str
    run_id: str
    session_id: str
    agent: str
    identity: str
    state_dir: Path
    deadline_ts: float | None = None
    traceparent: str | None = None
    end_user: str = ""  # who the run acts for (governance); an http tool may exchange a token for them
