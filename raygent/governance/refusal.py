"""How a governance stage refuses a tool call: audited with its reason, returned as an error result."""

from __future__ import annotations

from typing import Any

from raygent.core.errors import RaygentError
from raygent.core.interceptors import ToolCallInput, ToolCallOutput
from raygent.governance.audit import AuditWriter
from raygent.governance.gateway import error_result

__all__ = ["refuse"]


async def refuse(
    writer: AuditWriter,
    inp: ToolCallInput,
    err: RaygentError,
    *,
    stage: str,
    details: dict[str, Any] | None = None,
) -> ToolCallOutput:
    """Audit a refused tool call (``policy_decision``, with the reason) and return it as an error result,
    so the model can tell the user instead of the run failing."""
    await writer.write(
        inp.ctx,
        "policy_decision",
        {
            "stage": stage,
            "tool": inp.call.name,
            "call_id": inp.call.id,
            "outcome": "deny",
            "error_type": err.slug,
            "detail": err.detail,
            **(details or {}),
        },
    )
    return ToolCallOutput(call_id=inp.call.id, name=inp.call.name, result=error_result(err), is_error=True)
