"""Tool kinds that reach real systems (python today; HTTP, MQ, SOAP, terminal later)."""

from raygent.integrations.context import ToolContext

__all__ = ["ToolContext"]
