"""The approval book on its own: holds are idempotent, decisions follow the rules and are signed; on
SQLite and on PostgreSQL (``open_gov_db`` runs each test on both)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from govkit import MovableClock

from raygent.core.govconfig import ApprovalsSpec
from raygent.core.interceptors import CallContext, ToolCallInput
from raygent.core.messages import ToolCall
from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditQuery
from raygent.governance.approvals import ApprovalBook, arguments_sha256, root_of
from raygent.governance.audit import AuditWriter
from raygent.governance.decision import PolicyDecision
from raygent.governance.errors import ApprovalClosedError, SelfApprovalError, UnknownApprovalError
from raygent.governance.signing import Signer
from raygent.governance.state import GovernanceState


@pytest.fixture
async def book(
    tmp_path: Path, clock: MovableClock, open_gov_db: Callable[[], GovernanceState]
) -> ApprovalBook:
    store = SQLiteStore(tmp_path / "store.db")
    spec = ApprovalsSpec(timeout_s=60, two_approvers_above_usd=400)
    signer = Signer.from_file(tmp_path / "keys" / "audit.pem")
    return ApprovalBook(
        open_gov_db(),
        spec=spec,
        signer=signer,
        writer=AuditWriter(store, clock),
        clock=clock,
    )


def held(amount: float, run_id: str = "run_a-s1-c0") -> tuple[ToolCallInput, PolicyDecision]:
    ctx = CallContext(
        run_id=run_id, session_id="s", agent="refunds", identity="svc-refunds@acme",
        caller_chain=("support",), requester="C7", end_user="C7",
    )  # fmt: skip
    call = ToolCall(
        id=f"{run_id}:s2:c0", name="issue_refund", arguments={"order_id": "1", "amount_usd": amount}
    )
    return ToolCallInput(ctx, call), PolicyDecision(True, ("approval",), ("big",), amount_usd=amount)


async def test_hold_is_idempotent_per_call_and_knows_its_root(book: ApprovalBook) -> None:
    inp, decision = held(250)
    first, second = await asyncio.gather(book.hold(inp, decision, None), book.hold(inp, decision, None))
    assert first.approval_id == second.approval_id
    assert (first.root_run_id, first.root_agent) == ("run_a", "support") == root_of(inp.ctx)
    assert first.args_sha256 == arguments_sha256("issue_refund", inp.call.arguments)
    assert first.approvals_needed == 1 and held(401)[1].amount_usd == 401


async def test_two_approvers_above_the_threshold(book: ApprovalBook) -> None:
    a = await book.hold(*held(450), None)
    assert a.approvals_needed == 2
    assert (
        await book.decide(a.approval_id, approver="alice", decision="approve", reason="")
    ).status == "pending"
    with pytest.raises(Exception, match="second approver"):
        await book.decide(a.approval_id, approver="alice", decision="approve", reason="")
    done = await book.decide(a.approval_id, approver="bob", decision="approve", reason="ok")
    assert done.status == "approved" and done.approvers == ["alice", "bob"]
    assert book.signatures_valid(done)
    with pytest.raises(ApprovalClosedError):
        await book.decide(a.approval_id, approver="carol", decision="deny", reason="")


async def test_requester_and_end_user_never_approve(book: ApprovalBook) -> None:
    a = await book.hold(*held(250), None)
    with pytest.raises(SelfApprovalError):
        await book.decide(a.approval_id, approver="C7", decision="approve", reason="")


async def test_timeout_expires_and_is_audited(book: ApprovalBook, clock: MovableClock) -> None:
    a = await book.hold(*held(250), None)
    clock.offset_s = 61
    expired = await book.expire_due()
    assert [e.approval_id for e in expired] == [a.approval_id]
    assert (await book.get(a.approval_id)).status == "expired"
    with pytest.raises(ApprovalClosedError):
        await book.decide(a.approval_id, approver="alice", decision="approve", reason="")
    events = await book._writer._store.query_audit(AuditQuery(kind="approval"))
    assert [e.payload["event"] for e in events] == ["held", "expired"]


async def test_a_signature_over_other_arguments_does_not_verify(book: ApprovalBook) -> None:
    a = await book.hold(*held(250), None)
    done = await book.decide(a.approval_id, approver="alice", decision="approve", reason="")
    done.args_sha256 = arguments_sha256("issue_refund", {"order_id": "1", "amount_usd": 9999})
    assert not book.signatures_valid(done)


async def test_unknown_approval(book: ApprovalBook) -> None:
    with pytest.raises(UnknownApprovalError):
        await book.get("apr_nope")
