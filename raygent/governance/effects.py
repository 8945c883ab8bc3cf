"""Exactly-once side effects: the tool-effect ledger around every side-effecting tool call.

A call's id is deterministic, ``tool_call_id(run, step, index)``, and is also the idempotency key the
tool receives (``ToolContext.idempotency_key``). For a tool declared ``side_effect: true`` this
interceptor, innermost in the gateway's chain, records the call as *intended* before it runs and *done*
(with its result) after. When the same call arrives again (a resumed run, a retry after the gateway
died):

- *done*: the recorded result is returned and the tool does not run again;
- *intended* and recent (younger than the tool's ``timeout_s``): the first attempt may still be
  running, so this waits for it to settle;
- *intended* and older: the outcome is unknown (a crash between the effect and its record). An
  ``idempotent: true`` tool runs again with the same key, so a tool that honours the key applies the
  effect once; a non-idempotent one is not repeated: the ledger marks it ``needs_approval`` and the run
  stops with :class:`~raygent.governance.errors.EffectInDoubtError` for a person to decide.

A tool that timed out also leaves its outcome unknown, so its record stays *intended*.

Who decides an in-doubt call. In a governed fleet (one with an approval book, so the approvals API and
page exist) the in-doubt attempt becomes a pending approval (policy :data:`IN_DOUBT_POLICY`; its
``context`` names the tool, the arguments, the idempotency key, the attempts made and why the outcome is
unknown) and the run parks as ``needs_approval`` with ``approval_id`` and ``approval_url``; the run
resumer continues it once the approval closes. Each approval covers one attempt: it is held under the
call id ``<key>:in-doubt:<attempts>``, so neither a policy approval of the same call nor the decision
about an earlier attempt ever counts as one about this attempt.

- *approve* means "I checked the backend: the effect did not happen, repeat it". The ledger entry is
  reopened (:meth:`~raygent.core.store.base.Store.reopen_effect`, compare-and-set on the attempt count,
  so of two resumers only one reopens it) and the tool runs again with the same idempotency key; from
  then on it is an ordinary *intended* attempt: *done* is replayed, a recent attempt is waited for, and
  a new crash holds it for a new approval.
- *deny* (or nobody deciding before the approval's timeout) means "do not repeat it" (it happened, or
  a person reconciles it by hand): the call answers a refusal the model sees (audited, stage
  ``effects``) and the entry stays ``needs_approval``, so the effect is never repeated.

Without an approval book the run just stops with ``EffectInDoubtError``; the entry stays
``needs_approval`` for whoever reconciles it through the store.

:class:`EffectReplayInterceptor` sits near the outside of the chain and answers a call that is already
*done* before governance sees it again: the decision was made (and any spend counted) the first time.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import ConflictError, DeadlineExceededError
from raygent.core.faults import FaultHook
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.core.messages import Usage
from raygent.core.store.base import Store, canonical_json, sha256_hex
from raygent.core.store.durable import EffectRecord
from raygent.governance.approvals import Approval, ApprovalBook
from raygent.governance.audit import AuditWriter
from raygent.governance.decision import PolicyDecision
from raygent.governance.errors import ApprovalDeniedError, EffectInDoubtError
from raygent.governance.gateway import error_result
from raygent.governance.refusal import refuse

__all__ = [
    "IN_DOUBT_POLICY",
    "EffectLedgerInterceptor",
    "EffectReplayInterceptor",
    "call_fingerprint",
    "is_in_doubt",
]

IN_DOUBT_POLICY = "raygent.effects.in_doubt"


def is_in_doubt(approval: Approval) -> bool:
    """Whether ``approval`` is about an in-doubt side effect (held by the effect ledger, not a policy)."""
    return IN_DOUBT_POLICY in approval.context.get("policies", []) and "idempotency_key" in approval.context


_TIMEOUT_SLUG = "tool-timeout"
_UNSETTLED_SLUGS = frozenset({_TIMEOUT_SLUG, "tool-pending"})


def call_fingerprint(tool: str, arguments: dict[str, Any]) -> str:
    """What a replay must match: the tool's name and its arguments, canonically encoded."""
    return sha256_hex(canonical_json({"tool": tool, "arguments": arguments}))


def _outcome(out: ToolCallOutput) -> dict[str, Any]:
    return {
        "result": out.result,
        "is_error": out.is_error,
        "input_tokens": out.usage.input_tokens,
        "output_tokens": out.usage.output_tokens,
        "cost_usd": out.cost_usd,
    }


def _replay(inp: ToolCallInput, record: EffectRecord) -> ToolCallOutput:
    outcome = record.outcome or {}
    return ToolCallOutput(
        call_id=inp.call.id,
        name=inp.call.name,
        result=outcome.get("result"),
        is_error=bool(outcome.get("is_error", False)),
        latency_s=0.0,
        usage=Usage(int(outcome.get("input_tokens", 0)), int(outcome.get("output_tokens", 0))),
        cost_usd=float(outcome.get("cost_usd", 0.0)),
    )


class EffectReplayInterceptor(ToolInterceptor):
    """Returns the recorded result of a side-effecting call that is already done; passes the rest on.

    Args:
        fleet: Says which tools have side effects.
        store: Holds the ledger.
    """

    def __init__(self, fleet: Fleet, store: Store) -> None:
        self._fleet = fleet
        self._store = store

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        spec = self._fleet.tools.get(inp.call.name)
        if spec is not None and spec.side_effect:
            record = await self._store.get_effect(inp.call.id)
            fingerprint = call_fingerprint(inp.call.name, inp.call.arguments)
            if record is not None and record.status == "done" and record.fingerprint == fingerprint:
                return _replay(inp, record)
        return await self.next.call_tool(inp)


class EffectLedgerInterceptor(ToolInterceptor):
    """Records side-effecting calls before and after they run; replays, waits, retries or holds.

    Args:
        fleet: Says which tools have side effects, which are idempotent, and their timeouts.
        store: Holds the ledger.
        clock: Time source (wall clock: attempts are compared across processes).
        faults: Chaos tests only: kill points ``after_intent`` and ``after_effect``.
        poll_s: How often to look again while an earlier attempt may still be running.
        book: Approvals, where a person decides an in-doubt call (``None``: the run just stops).
        writer: Audit writer for refusals of denied in-doubt calls (default: one on ``store``).
    """

    def __init__(
        self,
        fleet: Fleet,
        store: Store,
        clock: Clock,
        *,
        faults: FaultHook | None = None,
        poll_s: float = 0.05,
        book: ApprovalBook | None = None,
        writer: AuditWriter | None = None,
    ) -> None:
        self._fleet = fleet
        self._store = store
        self._clock = clock
        self._faults = faults
        self._poll_s = poll_s
        self._book = book
        self._writer = writer if writer is not None else AuditWriter(store, clock)

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        spec = self._fleet.tools.get(inp.call.name)
        if spec is None or not spec.side_effect:
            return await self.next.call_tool(inp)
        fingerprint = call_fingerprint(inp.call.name, inp.call.arguments)
        replayed = await self._claim(inp, fingerprint, timeout_s=spec.timeout_s, idempotent=spec.idempotent)
        if replayed is not None:
            return replayed
        self._fault("after_intent", inp)
        out = await self.next.call_tool(inp)
        self._fault("after_effect", inp)
        if out.is_error and isinstance(out.result, dict) and out.result.get("error_type") in _UNSETTLED_SLUGS:
            # The tool may still apply the effect after we stopped waiting (timed out, or still pending on a
            # slow backend): outcome unknown, stays intended.
            return out
        await self._store.settle_effect(
            inp.call.id, status="done", outcome=_outcome(out), reason="", now=self._clock.now()
        )
        return out

    async def _claim(
        self, inp: ToolCallInput, fingerprint: str, *, timeout_s: float, idempotent: bool
    ) -> ToolCallOutput | None:
        """Start a new attempt (returns None), or return the recorded outcome of an earlier one."""
        key, ctx = inp.call.id, inp.ctx
        while True:
            record = await self._store.get_effect(key)
            if record is not None:
                if record.fingerprint != fingerprint:
                    conflict = ConflictError(
                        f"tool call {key!r} was first made with other arguments; it is not repeated"
                    )
                    return ToolCallOutput(key, inp.call.name, error_result(conflict), is_error=True)
                if record.status == "done":
                    return _replay(inp, record)
                if record.status == "needs_approval":
                    refused = await self._decided(inp, record)
                    if refused is not None:
                        return refused
                    try:  # approved: the effect did not happen, so this is a new attempt
                        await self._store.reopen_effect(
                            key, now=self._clock.now(), expected_attempts=record.attempts
                        )
                    except ConflictError:
                        continue  # another resumer reopened it first: its attempt follows the ordinary rules
                    return None
                now = self._clock.now()
                if now < record.started_at + timeout_s:
                    # The earlier attempt may still be running (its caller died, it did not): wait for it.
                    if ctx.deadline_ts is not None and now >= ctx.deadline_ts:
                        raise DeadlineExceededError(
                            f"the run's deadline passed while an earlier attempt of {key!r} was running"
                        )
                    await asyncio.sleep(self._poll_s)
                    continue
                if not idempotent:
                    await self._store.settle_effect(
                        key,
                        status="needs_approval",
                        outcome=None,
                        reason=self._reason(inp, record),
                        now=now,
                        # Only the attempt judged in doubt: one reopened since is running, not in doubt.
                        expected_attempts=record.attempts,
                    )
                    continue  # done if the earlier attempt settled just now; held for a person otherwise
            try:
                await self._store.begin_effect(
                    key,
                    run_id=ctx.run_id,
                    tool=inp.call.name,
                    fingerprint=fingerprint,
                    now=self._clock.now(),
                    expected_attempts=0 if record is None else record.attempts,
                )
            except ConflictError:
                continue  # another caller started an attempt between our read and write: look again
            return None

    @staticmethod
    def _reason(inp: ToolCallInput, record: EffectRecord) -> str:
        return (
            f"tool {inp.call.name!r} (call {record.key}) has side effects and is not idempotent; attempt "
            f"{record.attempts} started but its outcome was never recorded (a crash), so repeating it "
            "could apply the effect twice"
        )

    def _in_doubt(
        self, inp: ToolCallInput, record: EffectRecord, approval: Approval | None = None
    ) -> EffectInDoubtError:
        extra: dict[str, Any] = {
            "idempotency_key": record.key,
            "tool": inp.call.name,
            "attempts": record.attempts,
        }
        detail = record.reason or self._reason(inp, record)
        if approval is not None:
            extra.update(
                approval_id=approval.approval_id, approval_url=f"/v1/approvals/{approval.approval_id}"
            )
            detail = f"{detail}; a person decides in approval {approval.approval_id}"
        return EffectInDoubtError(detail, extra=extra)

    async def _decided(self, inp: ToolCallInput, record: EffectRecord) -> ToolCallOutput | None:
        """A person's decision on this in-doubt attempt: None when approved (repeat it), a refusal when
        denied or expired.

        Raises:
            EffectInDoubtError: Nobody decided yet (the pending approval is created on first sight), or
                there is no approval book.
        """
        if self._book is None:
            raise self._in_doubt(inp, record)
        # One approval per attempt, apart from any policy approval of the same call (see the module doc).
        held = replace(inp, call=replace(inp.call, id=f"{record.key}:in-doubt:{record.attempts}"))
        approval = await self._book.held(held, self._decision(inp, record), None)
        if approval.status == "pending":
            raise self._in_doubt(inp, record, approval)
        if self._book.grants(approval, inp):
            return None
        err = ApprovalDeniedError(
            f"approval {approval.approval_id} of the in-doubt call {record.key} of {inp.call.name} is "
            f"{approval.status} or does not match this call: it is not repeated (its outcome stays "
            "unknown; a person reconciles it)"
        )
        details = {"approval_id": approval.approval_id, "idempotency_key": record.key}
        return await refuse(self._writer, inp, err, stage="effects", details=details)

    def _amount(self, inp: ToolCallInput) -> float | None:
        """The USD amount the call moves, where the fleet names its argument (policies or spending)."""
        tool = inp.call.name
        mapped = self._fleet.policies.tools.get(tool) if self._fleet.policies is not None else None
        names = [mapped.amount_arg] if mapped is not None and mapped.amount_arg else []
        names += [limit.amount_arg for limit in self._fleet.spending.limits if limit.tool == tool]
        for name in names:
            try:
                return float(inp.call.arguments[name])
            except (KeyError, TypeError, ValueError):
                continue
        return None

    def _decision(self, inp: ToolCallInput, record: EffectRecord) -> PolicyDecision:
        reason = record.reason or self._reason(inp, record)
        return PolicyDecision(
            allowed=True,
            obligations=("approval",),
            policies=(IN_DOUBT_POLICY,),
            reasons=(reason,),
            # Repeating a payment moves money again: the four-eyes threshold applies as to the first call.
            amount_usd=self._amount(inp),
            context={
                "tool": inp.call.name,
                "arguments": inp.call.arguments,
                "idempotency_key": record.key,
                "attempts": record.attempts,
                "reason": reason,
                "approve_means": "the effect did not happen: repeat it once, with the same idempotency key",
                "deny_means": "do not repeat it (it happened, or a person reconciles it by hand)",
            },
        )

    def _fault(self, point: str, inp: ToolCallInput) -> None:
        if self._faults is not None:
            self._faults.at(point, run_id=inp.ctx.run_id, step=inp.ctx.step)
