"""Quarantine: a quarantined session's tool call is held for approval, runs once approved, is refused
when denied, and is refused outright where no approvals exist."""

from __future__ import annotations

import pytest

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.interceptors import CallContext, ToolCallInput, ToolCallOutput, ToolStage, chain_tool
from raygent.core.messages import ToolCall
from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditQuery
from raygent.governance.audit import AuditWriter
from raygent.governance.errors import ApprovalRequiredError
from raygent.governance.quarantine import QuarantineInterceptor
from raygent.governance.runtime import Governance


class Tool(ToolStage):
    def __init__(self) -> None:
        self.calls = 0

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        self.calls += 1
        return ToolCallOutput(call_id=inp.call.id, name=inp.call.name, result={"ok": True})


def call(session: str, call_id: str = "run_1:1:0") -> ToolCallInput:
    ctx = CallContext(run_id="run_1", session_id=session, agent="orders", identity="svc-orders@acme", step=1)
    return ToolCallInput(ctx, ToolCall(id=call_id, name="lookup_order", arguments={"order_id": "1042"}))


def quarantined(session: str, now: float) -> float | None:
    return now + 60 if session == "bad" else None


async def test_held_until_approved_then_runs_and_denied_is_refused(example_fleet: Fleet) -> None:
    clock = SystemClock()
    store = SQLiteStore(example_fleet.state_path("raygent.db"))
    book = Governance.open(example_fleet, store=store, clock=clock).approvals
    tool = Tool()
    chain = chain_tool(
        tool, [QuarantineInterceptor(quarantined, book=book, writer=AuditWriter(store, clock), clock=clock)]
    )
    assert (await chain.call_tool(call("good"))).result == {"ok": True}
    with pytest.raises(ApprovalRequiredError) as held:
        await chain.call_tool(call("bad"))
    approval_id = held.value.extra["approval_id"]
    assert held.value.extra["reason"] == "quarantine" and tool.calls == 1
    with pytest.raises(ApprovalRequiredError):  # the same call stays held, with the same approval
        await chain.call_tool(call("bad"))
    assert [a.approval_id for a in await book.find_all(status="pending")] == [approval_id]
    await book.decide(approval_id, approver="alice", decision="approve", reason="checked")
    assert (await chain.call_tool(call("bad"))).result == {"ok": True} and tool.calls == 2
    with pytest.raises(ApprovalRequiredError) as other:
        await chain.call_tool(call("bad", "run_1:2:0"))
    await book.decide(other.value.extra["approval_id"], approver="alice", decision="deny", reason="no")
    refused = await chain.call_tool(call("bad", "run_1:2:0"))
    assert refused.is_error and refused.result["error_type"] == "approval-denied" and tool.calls == 2
    decisions = await store.query_audit(AuditQuery(kind="policy_decision"))
    assert decisions[-1].payload["stage"] == "quarantine" and decisions[-1].payload["outcome"] == "deny"
    await store.close()


async def test_without_approvals_the_call_is_refused_with_needs_approval(example_fleet: Fleet) -> None:
    clock = SystemClock()
    store = SQLiteStore(example_fleet.state_path("raygent.db"))
    tool = Tool()
    chain = chain_tool(
        tool, [QuarantineInterceptor(quarantined, book=None, writer=AuditWriter(store, clock), clock=clock)]
    )
    out = await chain.call_tool(call("bad"))
    assert out.is_error and tool.calls == 0 and "needs approval" in out.result["error"]
    await store.close()
