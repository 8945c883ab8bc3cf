"""What a tool implementation receives besides its arguments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ToolContext"]


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Call metadata for a tool. ``idempotency_key`` is deterministic per (run, step, call index), so a
    tool that honours it applies a side effect once even when the call is retried."""

    tool_call_id: str
    idempotency_key: str
    run_id: str
    session_id: str
    agent: str
    identity: str
    state_dir: Path
    deadline_ts: float | None = None
