"""Errors raised by telemetry's actions.

RaygentError
└── BudgetExceededError 429
    └── AgentThrottledError   (the anomaly detector throttled the agent; Retry-After says how long)
"""

from __future__ import annotations

from raygent.core.errors import BudgetExceededError

__all__ = ["AgentThrottledError"]


class AgentThrottledError(BudgetExceededError):
    """The detector throttled this agent; its runs answer 429 until the throttle lapses."""

    slug = "agent-throttled"
    title = "Agent throttled by the anomaly detector"
