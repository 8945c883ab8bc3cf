"""Errors raised by model backends and the router.

Every class derives from :class:`raygent.core.errors.ModelError`, so callers that only care whether "the
model failed" catch one type, and the router decides whether to try another backend from ``retryable``.
None of them adds constructor parameters, so the base class's ``__reduce__`` pickles them across Ray
processes with every field intact.

    ModelError (raygent.core.errors)
    ├── ModelTimeoutError       504, retryable: the backend did not answer in time
    ├── ModelUnavailableError   503, retryable: refused connection, 5xx, 429 (``retry_after_s`` is set
    │                                from ``Retry-After`` where the server sent one)
    ├── ModelResponseError      502: the backend answered with something unusable (bad JSON, a 4xx,
    │                                a script rule that refers to a missing field)
    └── NoBackendError          503: no backend could serve the call (none configured, or every
                                     candidate failed); retryable when every failure was
"""

from __future__ import annotations

from raygent.core.errors import ModelError

__all__ = ["ModelResponseError", "ModelTimeoutError", "ModelUnavailableError", "NoBackendError"]


class ModelTimeoutError(ModelError):
    """The backend did not answer within the call's timeout."""

    status = 504
    slug = "model-timeout"
    title = "Model backend timed out"
    default_retryable = True


class ModelUnavailableError(ModelError):
    """The backend cannot take the call now: refused connection, a 5xx, or rate limited (429)."""

    status = 503
    slug = "model-unavailable"
    title = "Model backend unavailable"
    default_retryable = True


class ModelResponseError(ModelError):
    """The backend answered, but with something that cannot be used; retrying will not help."""

    status = 502
    slug = "model-bad-response"
    title = "Model backend returned an invalid response"
    default_retryable = False


class NoBackendError(ModelError):
    """No backend could serve the call; ``extra["attempts"]`` says what each candidate did."""

    status = 503
    slug = "no-model-backend"
    title = "No model backend available"
    default_retryable = False
