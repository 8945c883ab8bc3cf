"""Errors raised by governance: the policy enforcement point (the ToolGateway), authentication, RBAC,
approvals, spending limits and the kill switch.

    RaygentError
    ├── UnauthorizedError 401
    │   └── TokenInvalidError           (missing, expired, not-yet-valid, wrong aud/iss, bad signature)
    ├── ForbiddenError 403
    │   ├── ToolNotGrantedError         (the agent's role does not grant the tool)
    │   ├── PermissionDeniedError       (RBAC: the caller's role lacks the permission)
    │   ├── PolicyDeniedError           (a Cedar policy forbids the call, or the engine failed)
    │   ├── IdentityRevokedError        (kill switch)
    │   ├── EgressDeniedError           (an http tool's request breaks its egress rules)
    │   ├── ValidationRejectedError     (the validator agent rejected the action)
    │   ├── ApprovalDeniedError         (an approver said no, or the approval timed out)
    │   └── SelfApprovalError           (four-eyes: the requester cannot approve their own run)
    ├── NotFoundError 404
    │   ├── UnknownToolError
    │   └── UnknownApprovalError
    ├── ConflictError 409
    │   └── ApprovalClosedError         (already decided or expired)
    ├── ValidationFailedError 422
    │   └── ToolArgumentsError
    ├── BudgetExceededError 429
    │   └── SpendingLimitError          (per-agent per-day side-effect cap)
    └── ApprovalRequiredError 202       (not a failure: the run parks until a person decides)
        └── EffectInDoubtError          (a non-idempotent side effect's outcome is unknown after a crash)
"""

from __future__ import annotations

from raygent.core.errors import (
    BudgetExceededError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RaygentError,
    UnauthorizedError,
    ValidationFailedError,
)

__all__ = [
    "ApprovalClosedError",
    "ApprovalDeniedError",
    "ApprovalRequiredError",
    "EffectInDoubtError",
    "EgressDeniedError",
    "IdentityRevokedError",
    "PermissionDeniedError",
    "PolicyDeniedError",
    "SelfApprovalError",
    "SpendingLimitError",
    "TokenInvalidError",
    "ToolArgumentsError",
    "ToolNotGrantedError",
    "UnknownApprovalError",
    "UnknownToolError",
    "ValidationRejectedError",
]


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


class TokenInvalidError(UnauthorizedError):
    """No bearer token, or one that fails signature, algorithm, exp, nbf, aud or iss checks."""

    slug = "token-invalid"
    title = "Invalid or missing bearer token"


class PermissionDeniedError(ForbiddenError):
    """RBAC: none of the caller's roles grants the permission (deny by default)."""

    slug = "permission-denied"
    title = "Permission denied"


class PolicyDeniedError(ForbiddenError):
    """A Cedar policy forbids the action, none permits it, or the policy engine failed (fail closed)."""

    slug = "policy-denied"
    title = "Denied by policy"


class IdentityRevokedError(ForbiddenError):
    """The agent identity was revoked with the kill switch."""

    slug = "identity-revoked"
    title = "Identity revoked"


class EgressDeniedError(ForbiddenError):
    """An ``http`` tool's request goes to a host, method or path its egress rules do not allow; nothing
    was sent. ``extra`` has ``method``, ``host`` and ``path``."""

    slug = "egress-denied"
    title = "Denied by egress rules"


class ValidationRejectedError(ForbiddenError):
    """The validator agent found that the proposed action breaks the business rules."""

    slug = "validation-rejected"
    title = "Rejected by the validator agent"


class ApprovalDeniedError(ForbiddenError):
    """An approver denied the held call, or nobody decided before the timeout."""

    slug = "approval-denied"
    title = "Approval denied"


class SelfApprovalError(ForbiddenError):
    slug = "self-approval"
    title = "The requester cannot approve their own run"


class UnknownApprovalError(NotFoundError):
    slug = "unknown-approval"
    title = "Unknown approval"


class ApprovalClosedError(ConflictError):
    slug = "approval-closed"
    title = "Approval already closed"
    default_retryable = False


class SpendingLimitError(BudgetExceededError):
    """The call would take the agent past its daily cap for the tool."""

    slug = "spending-limit"
    title = "Daily spending limit reached"
    default_retryable = False


class ApprovalRequiredError(RaygentError):
    """A tool call is held for a person's decision; the run parks. ``extra`` carries ``approval_id``."""

    status = 202
    slug = "approval-required"
    title = "Waiting for approval"


class EffectInDoubtError(ApprovalRequiredError):
    """A side-effecting, non-idempotent call started before a crash and never recorded its outcome.

    Repeating it could apply the effect twice, so the run stops as ``needs_approval`` and a person
    decides; ``extra`` carries the call's ``idempotency_key`` and ``tool``.
    """

    slug = "effect-in-doubt"
    title = "Side effect outcome unknown: a person must decide"
