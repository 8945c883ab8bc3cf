"""What governance interceptors share: the policy decision of the call in flight.

The Cedar interceptor decides; the validation, approval and spending interceptors further down the same
chain act on that decision. It travels in a :class:`~contextvars.ContextVar` because the chain runs in
one task (each interceptor awaits the next), so the value is scoped to exactly one tool call and never
shared between concurrent calls.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CURRENT_DECISION", "CURRENT_VERDICT", "Outcome", "PolicyDecision"]

Outcome = Literal["allow", "deny", "require_approval", "require_validation"]


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The policy engine's answer for one tool call.

    Attributes:
        allowed: Cedar's decision.
        obligations: What must happen before an allowed call runs: ``validation`` and/or ``approval``.
        policies: Ids (``@id`` annotations where present) of the policies that determined it.
        reasons: ``@reason`` annotations of the determining forbid policies (why it was denied).
        context: The Cedar request's context and resource attributes (shown to approvers).
        amount_usd: The amount the call moves, when the tool names one.
        latency_ms: Time the engine took.
    """

    allowed: bool
    obligations: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    context: dict[str, Any] = field(default_factory=dict)
    amount_usd: float | None = None
    latency_ms: float = 0.0

    @property
    def outcome(self) -> Outcome:
        if not self.allowed:
            return "deny"
        if "validation" in self.obligations:
            return "require_validation"
        if "approval" in self.obligations:
            return "require_approval"
        return "allow"

    def to_audit(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "obligations": list(self.obligations),
            "policies": list(self.policies),
            "reasons": list(self.reasons),
            "amount_usd": self.amount_usd,
            "latency_ms": round(self.latency_ms, 4),
        }


CURRENT_DECISION: ContextVar[PolicyDecision | None] = ContextVar("raygent_policy_decision", default=None)
# The validator agent's verdict on the call in flight (shown to approvers), set by validation.
CURRENT_VERDICT: ContextVar[dict[str, Any] | None] = ContextVar("raygent_validation_verdict", default=None)
