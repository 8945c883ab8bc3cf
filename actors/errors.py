"""Errors of the agent step loop."""

from __future__ import annotations

from raygent.core.errors import AgentError, PayloadTooLargeError, StoreError, ValidationFailedError

__all__ = [
    "CheckpointSchemaError",
    "DelegationCycleError",
    "DelegationDepthError",
    "InputTooLongError",
    "MaxStepsExceededError",
    "SessionActorDiedError",
    "StateTooLargeError",
]


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


class StateTooLargeError(PayloadTooLargeError):
    """A stateful agent's session state would exceed the agent's ``max_state_bytes``."""

    slug = "state-too-large"
    title = "Agent state exceeds its size limit"


class CheckpointSchemaError(StoreError):
    """A checkpoint was written by a newer raygent (or is unreadable); it is left untouched."""

    slug = "checkpoint-schema"
    title = "Checkpoint cannot be read by this version"
    default_retryable = False


class SessionActorDiedError(AgentError):
    """A stateful session actor died more often than ``max_restarts``; the run is kept resumable."""

    slug = "session-actor-died"
    title = "Stateful agent crashed repeatedly"
    default_retryable = True
