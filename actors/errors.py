"""Errors of the agent step loop."""

from __future__ import annotations

from raygent.core.errors import AgentError, ValidationFailedError

__all__ = ["DelegationCycleError", "DelegationDepthError", "InputTooLongError", "MaxStepsExceededError"]


class MaxStepsExceededError(AgentError):
    slug = "max-steps-exceeded"
    title = "Agent did not finish within its step limit"


class DelegationCycleError(AgentError):
    slug = "delegation-cycle"
    title = "Delegation would form a cycle"


class DelegationDepthError(AgentError):
    slug = "delegation-too-deep"
    title = "Delegation chain is too deep"


class InputTooLongError(ValidationFailedError):
    slug = "input-too-long"
    title = "Input is longer than the agent accepts"
