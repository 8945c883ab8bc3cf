"""Quarantine: every tool call of a session the anomaly detector quarantined needs a person's approval.

The detector's ``quarantine`` action puts a session on the control board (see
:mod:`raygent.telemetry.controls`); this interceptor, in the gateway's tool chain after tracing and
metrics and before the rest of governance, holds each of that session's tool calls through the same
:class:`~raygent.governance.approvals.ApprovalBook` the approval policies use: the first sight of a call
records a pending approval and parks the run (``needs_approval``); once an approver approves it (signed,
for exactly these arguments), the resumed run's call goes through. A denied or expired approval is a
refusal the model sees. Without an approval book the call is refused with a clear "needs approval" error.
"""

from __future__ import annotations

from collections.abc import Callable

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.core.store.base import Store
from raygent.governance.approvals import ApprovalBook
from raygent.governance.audit import AuditWriter
from raygent.governance.decision import PolicyDecision
from raygent.governance.errors import ApprovalDeniedError, ApprovalRequiredError
from raygent.governance.refusal import refuse
from raygent.governance.runtime import Governance
from raygent.telemetry.client import TelemetryClient
from raygent.telemetry.control import MetricsToolInterceptor

__all__ = ["QUARANTINE_POLICY", "QuarantineInterceptor", "observed_tool_stages"]

QUARANTINE_POLICY = "raygent.anomaly.quarantine"

QuarantineLookup = Callable[[str, float], float | None]  # (session id, now) -> quarantined until, or None


class QuarantineInterceptor(ToolInterceptor):
    """Holds every tool call of a quarantined session for approval.

    Args:
        quarantined_until: Looks a session up on the current controls.
        book: Approvals (``None``: refuse instead of holding).
        writer: Audit writer for refusals.
        clock: Time source.
    """

    def __init__(
        self,
        quarantined_until: QuarantineLookup,
        *,
        book: ApprovalBook | None,
        writer: AuditWriter,
        clock: Clock,
    ) -> None:
        self._until = quarantined_until
        self._book = book
        self._writer = writer
        self._clock = clock

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        until = self._until(inp.ctx.session_id, self._clock.now())
        if until is None:
            return await self.next.call_tool(inp)
        details = {"quarantined_until": until}
        if self._book is None:
            err = ApprovalDeniedError(
                f"session {inp.ctx.session_id!r} is quarantined by the anomaly detector: {inp.call.name} "
                "needs approval, and this fleet has no approvals configured"
            )
            return await refuse(self._writer, inp, err, stage="quarantine", details=details)
        approval = await self._book.find(inp.ctx.run_id, inp.call.id)
        if approval is None:
            decision = PolicyDecision(
                allowed=True,
                obligations=("approval",),
                policies=(QUARANTINE_POLICY,),
                reasons=("session quarantined by the anomaly detector",),
                context={"quarantined_until": until, "session_id": inp.ctx.session_id},
            )
            approval = await self._book.hold(inp, decision, None)
        if approval.status == "pending":
            raise ApprovalRequiredError(
                f"session {inp.ctx.session_id!r} is quarantined: {inp.call.name} needs approval "
                f"{approval.approval_id}",
                extra={
                    "approval_id": approval.approval_id,
                    "approval_url": f"/v1/approvals/{approval.approval_id}",
                    "tool": inp.call.name,
                    "reason": "quarantine",
                },
            )
        if not self._book.grants(approval, inp):
            err = ApprovalDeniedError(
                f"approval {approval.approval_id} of quarantined session {inp.ctx.session_id!r} is "
                f"{approval.status} or does not match this call; refusing"
            )
            return await refuse(self._writer, inp, err, stage="quarantine", details=details)
        return await self.next.call_tool(inp)


def observed_tool_stages(
    fleet: Fleet, telemetry: TelemetryClient | None, *, store: Store, clock: Clock
) -> list[ToolInterceptor]:
    """The tool-chain stages of observability: metrics, then the quarantine hold (empty without a client).

    The approval book is opened only when a detector rule can quarantine, so other fleets never create
    governance state for it.
    """
    if telemetry is None:
        return []
    detector = fleet.telemetry.detector
    rules = [] if detector is None else [detector.token_spike, detector.tool_errors, detector.latency_slo]
    can_quarantine = any(rule is not None and "quarantine" in rule.actions for rule in rules)
    stages: list[ToolInterceptor] = [MetricsToolInterceptor(telemetry)]
    if can_quarantine:
        book = Governance.open(fleet, store=store, clock=clock).approvals

        def lookup(session_id: str, now: float) -> float | None:
            return telemetry.controls.quarantined_until(session_id, now)

        stages.append(QuarantineInterceptor(lookup, book=book, writer=AuditWriter(store, clock), clock=clock))
    return stages
