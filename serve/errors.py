"""Errors of the serving layer (each maps to one HTTP status through its base class).

ValidationFailedError (422)
└── IdempotencyKeyMismatchError   the key was used with another request body
ConflictError (409)
├── IdempotencyKeyInUseError      the first request with this key is still running
├── RunFinishedError              cancel of a run that already ended
└── RunCancelledError             the run was cancelled while the client waited for it
BadRequestError (400)
└── BadIdempotencyKeyError        the header is not a usable key
ForbiddenError (403)
└── SessionNotYoursError          the session_id belongs to another caller (governed fleets)
"""

from __future__ import annotations

from raygent.core.errors import BadRequestError, ConflictError, ForbiddenError, ValidationFailedError

__all__ = [
    "BadIdempotencyKeyError",
    "IdempotencyKeyInUseError",
    "IdempotencyKeyMismatchError",
    "RunCancelledError",
    "RunFinishedError",
    "SessionNotYoursError",
]


class IdempotencyKeyMismatchError(ValidationFailedError):
    slug = "idempotency-key-mismatch"
    title = "Idempotency key reused with another request"


class IdempotencyKeyInUseError(ConflictError):
    slug = "idempotency-key-in-use"
    title = "A request with this idempotency key is still being processed"


class RunFinishedError(ConflictError):
    slug = "run-finished"
    title = "Run already finished"
    default_retryable = False


class BadIdempotencyKeyError(BadRequestError):
    slug = "bad-idempotency-key"
    title = "Invalid Idempotency-Key header"


class RunCancelledError(ConflictError):
    slug = "run-cancelled"
    title = "Run cancelled"
    default_retryable = False


class SessionNotYoursError(ForbiddenError):
    slug = "session-not-yours"
    title = "Session belongs to another caller"
