"""Errors raised by the policy enforcement point (the ToolGateway)."""

from __future__ import annotations

from raygent.core.errors import ForbiddenError, NotFoundError, ValidationFailedError

__all__ = ["ToolArgumentsError", "ToolNotGrantedError", "UnknownToolError"]


class ToolNotGrantedError(ForbiddenError):
    """The calling agent's role does not grant this tool."""

    slug = "tool-not-granted"
    title = "Tool not granted to this agent"


class UnknownToolError(NotFoundError):
    slug = "unknown-tool"
    title = "Unknown tool"


class ToolArgumentsError(ValidationFailedError):
    """The model's arguments do not match the tool's JSON schema."""

    slug = "tool-arguments-invalid"
    title = "Tool arguments do not match the schema"
