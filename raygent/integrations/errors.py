"""Errors of the tool kinds."""

from __future__ import annotations

from raygent.core.errors import ToolError

__all__ = ["ToolLoadError", "ToolResultError", "ToolTimeoutError"]


class ToolLoadError(ToolError):
    """The tool's code could not be loaded (bad entrypoint, import error)."""

    slug = "tool-load-failed"
    title = "Tool could not be loaded"


class ToolTimeoutError(ToolError):
    slug = "tool-timeout"
    title = "Tool timed out"
    default_retryable = True


class ToolResultError(ToolError):
    """The tool returned something raygent cannot pass on (not JSON, too large)."""

    slug = "tool-result-invalid"
    title = "Tool returned an invalid result"
