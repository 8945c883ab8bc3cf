"""Settling an in-doubt side effect by hand: "it happened, and this is what it returned".

An in-doubt call (see :mod:`raygent.governance.effects`) waits on an approval whose *approve* repeats it
and whose *deny* never repeats it. A person who checked the backend and found that the effect *did*
happen has a third answer: deny the repeat and record the result the backend shows. The effect ledger
then holds the call as *done* with that result (and who recorded it), so the resumed run's call is
answered from the ledger like any finished call: the model sees the real outcome, not a refusal, and
the effect is never repeated.

Order matters for exactly-once: the ledger is settled first, compare-and-set on the attempt the approval
is about (a call repeated meanwhile is not overwritten: 409), and only then is the approval closed, so a
resume can never find the approval closed and the call still in doubt. The decision (a deny, signed and
audited like every decision) names the SHA-256 of the recorded result.
"""

from __future__ import annotations

from typing import Any

from raygent.core.errors import ConflictError, ValidationFailedError
from raygent.core.store.base import canonical_json, sha256_hex
from raygent.governance.approvals import Approval
from raygent.governance.effects import is_in_doubt
from raygent.governance.errors import ApprovalClosedError, SelfApprovalError
from raygent.governance.runtime import Governance

__all__ = ["settle_in_doubt"]


async def settle_in_doubt(
    gov: Governance, approval_id: str, *, approver: str, result: Any, reason: str
) -> Approval:
    """Record ``result`` as the outcome of the in-doubt call of ``approval_id`` and close the approval.

    Raises:
        UnknownApprovalError: No such approval.
        ValidationFailedError: The approval is not about an in-doubt side effect.
        ApprovalClosedError: The approval is already decided or expired.
        SelfApprovalError: ``approver`` requested the run.
        ConflictError: The call was repeated or finished meanwhile (its ledger entry moved on).
    """
    approval = await gov.approvals.get(approval_id)
    context = approval.context
    if not is_in_doubt(approval):
        raise ValidationFailedError(
            f"approval {approval_id} is not about an in-doubt side effect; only those take a result "
            "recorded by hand"
        )
    if approval.status != "pending" or gov.clock.now() >= approval.expires_at:
        raise ApprovalClosedError(f"approval {approval_id} is already {approval.status}")
    if approver in (approval.requester, approval.end_user):
        raise SelfApprovalError(f"{approver!r} requested this run and cannot settle its side effect")
    key, attempts = str(context["idempotency_key"]), int(context["attempts"])
    outcome = {"result": result, "is_error": False, "settled_by": approver, "reason": reason}
    settled = await gov.store.settle_effect(
        key,
        status="done",
        outcome=outcome,
        reason=f"settled by hand by {approver}",
        now=gov.clock.now(),
        expected_attempts=attempts,
    )
    if settled.status != "done" or settled.attempts != attempts or settled.outcome != outcome:
        raise ConflictError(
            f"the call {key} moved on since approval {approval_id} was held (now {settled.status}, "
            f"attempt {settled.attempts}); nothing was recorded",
            retryable=False,
        )
    digest = sha256_hex(canonical_json(result))
    why = f"settled by hand: the effect happened; result recorded (sha256 {digest})"
    return await gov.approvals.decide(
        approval_id, approver=approver, decision="deny", reason=f"{why}: {reason}" if reason else why
    )
