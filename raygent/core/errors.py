"""The raygent exception tree.

Every error that can reach a user derives from :class:`RaygentError`. Each class carries the HTTP status
and a stable ``type`` slug used for RFC 9457 problem documents, and whether a retry may succeed. Errors
cross Ray process boundaries, so each one pickles through ``__reduce__`` with all its fields.

    RaygentError
    ├── ConfigError             (fleet file or flag is invalid; CLI exit 2)
    ├── BadRequestError         400
    ├── UnauthorizedError       401
    ├── ForbiddenError          403
    ├── NotFoundError           404
    ├── ConflictError           409
    ├── PayloadTooLargeError    413
    ├── ValidationFailedError   422
    ├── BudgetExceededError     429
    ├── RateLimitedError        429 (a caller over its rate limit; Retry-After)
    ├── OverloadedError         503
    ├── DeadlineExceededError   504
    ├── StoreError              500 (retryable)
    ├── ModelError              502 (model backend failed; retryable flag set by the backend)
    ├── ToolError               502 (a tool failed or returned something invalid)
    └── AgentError              500 (step loop could not finish: max steps, delegation cycle, …)
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AgentError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigError",
    "ConflictError",
    "DeadlineExceededError",
    "ForbiddenError",
    "ModelError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RaygentError",
    "StoreError",
    "ToolError",
    "UnauthorizedError",
    "ValidationFailedError",
]


class RaygentError(Exception):
    """Base of every raygent error.

    Args:
        detail: One plain sentence for the person reading it.
        retryable: Whether the same call may succeed later.
        retry_after_s: Hint for ``Retry-After`` when the error is retryable.
        extra: Structured fields added to the problem document (never secrets).
    """

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after_s = retry_after_s
        self.extra = dict(extra or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.detail, self.retryable, self.retry_after_s, self.extra))

    def to_problem(self, *, instance: str | None = None) -> dict[str, Any]:
        """RFC 9457 problem document for this error."""
        doc: dict[str, Any] = {
            "type": f"https://raygent.dev/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            doc["instance"] = instance
        if self.retry_after_s is not None:
            doc["retry_after_s"] = self.retry_after_s
        # Extension members never replace the standard ones: a stray 'status' in extra would make the
        # document disagree with the HTTP status it is sent with.
        for key, value in self.extra.items():
            doc.setdefault(key, value)
        return doc


def _rebuild(
    cls: type[RaygentError],
    detail: str,
    retryable: bool,
    retry_after_s: float | None,
    extra: dict[str, Any],
) -> RaygentError:
    return cls(detail, retryable=retryable, retry_after_s=retry_after_s, extra=extra)


class ConfigError(RaygentError):
    """The fleet file, a flag or another configuration input is invalid."""

    status = 400
    slug = "invalid-config"
    title = "Invalid configuration"


class BadRequestError(RaygentError):
    status = 400
    slug = "malformed-request"
    title = "Malformed request"


class UnauthorizedError(RaygentError):
    status = 401
    slug = "unauthorized"
    title = "Authentication required"


class ForbiddenError(RaygentError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class NotFoundError(RaygentError):
    status = 404
    slug = "not-found"
    title = "Not found"


class ConflictError(RaygentError):
    status = 409
    slug = "conflict"
    title = "State conflict"
    default_retryable = True


class PayloadTooLargeError(RaygentError):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class ValidationFailedError(RaygentError):
    status = 422
    slug = "validation-failed"
    title = "Request does not match the schema"


class BudgetExceededError(RaygentError):
    status = 429
    slug = "budget-exceeded"
    title = "Budget or rate limit exceeded"
    default_retryable = True


class RateLimitedError(RaygentError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"
    default_retryable = True


class OverloadedError(RaygentError):
    status = 503
    slug = "overloaded"
    title = "Service overloaded"
    default_retryable = True


class DeadlineExceededError(RaygentError):
    status = 504
    slug = "deadline-exceeded"
    title = "Deadline exceeded"


class StoreError(RaygentError):
    status = 500
    slug = "store-unavailable"
    title = "State store failed"
    default_retryable = True


class ModelError(RaygentError):
    status = 502
    slug = "model-failed"
    title = "Model backend failed"


class ToolError(RaygentError):
    status = 502
    slug = "tool-failed"
    title = "Tool failed"


class AgentError(RaygentError):
    status = 500
    slug = "agent-failed"
    title = "Agent could not finish"
