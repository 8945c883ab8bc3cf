"""Second-agent validation: before a call with the ``validation`` obligation runs, a validator agent
(its own identity, usually a cheaper model) checks the proposed action against written business rules.

The validator gets the rules, the tool, its arguments and the policy context as plain text and must
answer starting with ``APPROVE`` or ``REJECT``, followed by its reasons. Anything else, or the
validator failing, counts as a rejection (fail closed). The verdict and reasons are audited
(``policy_decision``, stage ``validation``) and shown to human approvers.

The validator's run id is derived from the call's, so a parked run that resumes reuses the verdict
instead of asking again.
"""

from __future__ import annotations

import re
from typing import Any

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.govconfig import ValidationSpec
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.core.runs import AgentInvoker, RunInput
from raygent.core.store.base import Store, canonical_json, sha256_hex
from raygent.governance.audit import AuditWriter
from raygent.governance.decision import CURRENT_DECISION, CURRENT_VERDICT
from raygent.governance.errors import ValidationRejectedError
from raygent.governance.refusal import refuse

__all__ = ["ValidationInterceptor", "parse_verdict", "validation_prompt"]

_VERDICT = re.compile(r"^\s*(APPROVE|REJECT)\b[\s:.,-]*(.*)$", re.IGNORECASE | re.DOTALL)


def parse_verdict(text: str | None) -> tuple[bool, str]:
    """``(approved, reasons)`` from the validator's answer; unparseable answers are rejections."""
    found = _VERDICT.match(text or "")
    if found is None:
        return False, f"the validator did not answer APPROVE or REJECT: {(text or '')[:200]!r}"
    return found.group(1).upper() == "APPROVE", found.group(2).strip()


def validation_prompt(rules: str, inp: ToolCallInput, context: dict[str, Any]) -> str:
    ctx, call = inp.ctx, inp.call
    return (
        "Check this proposed action against the business rules. "
        "Answer APPROVE or REJECT, then your reasons.\n"
        f"Proposed action: {call.name} {canonical_json(call.arguments)}\n"
        f"Agent: {ctx.agent} ({ctx.identity}), acting for end user {ctx.end_user or 'unknown'}\n"
        f"Context: {canonical_json(context)}\n"
        f"Business rules:\n{rules.strip()}\n"
    )


class ValidationInterceptor(ToolInterceptor):
    """Runs the validator agent for calls whose policy decision requires validation."""

    def __init__(
        self,
        fleet: Fleet,
        spec: ValidationSpec,
        *,
        rules: str,
        invoker: AgentInvoker | None,
        store: Store,
        writer: AuditWriter,
        clock: Clock,
    ) -> None:
        self._fleet = fleet
        self._store = store
        self._spec = spec
        self._rules = rules
        self._invoker = invoker
        self._writer = writer
        self._clock = clock

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        decision = CURRENT_DECISION.get()
        if decision is None or "validation" not in decision.obligations:
            return await self.next.call_tool(inp)
        approved, reasons, run_id = await self._ask(inp, decision.context)
        validator = self._spec.validator_agent
        verdict = {
            "validator_agent": validator,
            "validator_identity": self._fleet.agents[validator].identity,
            "verdict": "approve" if approved else "reject",
            "reasons": reasons,
            "validator_run_id": run_id,
        }
        await self._writer.write(
            inp.ctx,
            "policy_decision",
            {"stage": "validation", "tool": inp.call.name, "call_id": inp.call.id, **verdict},
        )
        if not approved:
            err = ValidationRejectedError(f"validator {validator!r} rejected {inp.call.name}: {reasons}")
            return await refuse(self._writer, inp, err, stage="validation", details={"reasons": reasons})
        token = CURRENT_VERDICT.set(verdict)
        try:
            return await self.next.call_tool(inp)
        finally:
            CURRENT_VERDICT.reset(token)

    async def _ask(self, inp: ToolCallInput, context: dict[str, Any]) -> tuple[bool, str, str]:
        # Not derived by '-' from the caller's id: the validator's run is not a delegated child.
        run_id = "run_val" + sha256_hex(f"{inp.ctx.run_id}/{inp.call.id}")[:22]
        earlier = await self._store.get_run(run_id)
        if earlier is not None and earlier.status == "completed":
            approved, reasons = parse_verdict(earlier.output)
            return approved, reasons, run_id
        if self._invoker is None:
            return False, "no validator agent is reachable from this gateway", run_id
        run = RunInput(
            run_id=run_id,
            agent=self._spec.validator_agent,
            input=validation_prompt(self._rules, inp, context),
            session_id=f"validation/{run_id}",
            deadline_ts=self._clock.now() + self._spec.timeout_s,
            traceparent=inp.ctx.traceparent,
            requester=inp.ctx.requester,
            end_user=inp.ctx.end_user,
            resume=True,
        )
        try:
            out = await self._invoker.invoke(run)
        except Exception as exc:
            return False, f"the validator agent failed: {exc}", run_id
        if out.status != "completed":
            return False, f"the validator agent did not complete ({out.status})", run_id
        approved, reasons = parse_verdict(out.output)
        return approved, reasons, run_id
