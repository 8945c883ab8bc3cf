"""In-doubt side effects of a governed fleet go to a person: a pending approval, then approve = repeat once
with the same idempotency key, deny or expiry = a refusal and never a repeat (the real gateway chain on the
refund desk, with a spending limit so the fleet is governed and has an approval book)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from govkit import MovableClock
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.config import FaultSpec, Fleet, StoreSpec
from raygent.core.errors import ValidationFailedError
from raygent.core.faults import FaultHook
from raygent.core.fleetfile import load_fleet
from raygent.core.govconfig import SpendingLimitSpec, SpendingSpec
from raygent.core.interceptors import CallContext, ToolCallInput, ToolStage
from raygent.core.messages import ToolCall
from raygent.core.store import SQLiteStore, open_store
from raygent.core.store.base import AuditQuery
from raygent.governance.approvals import ApprovalBook
from raygent.governance.decision import PolicyDecision
from raygent.governance.effects import IN_DOUBT_POLICY, call_fingerprint
from raygent.governance.errors import EffectInDoubtError
from raygent.governance.gateway import ToolGateway
from raygent.governance.gateway_actor import build_tool_chain
from raygent.governance.runtime import Governance, governance_enabled
from raygent.governance.settle import settle_in_doubt

FLEET = Path(__file__).resolve().parents[3] / "examples" / "refund_desk" / "fleet.yaml"
KEY = "run_1:s3:c0"
NOTIFY = {"order_id": "12", "refund_id": "rf_1"}


class Crash(BaseException):
    """An in-process stand-in for SIGKILL (a BaseException: nothing under test catches it)."""


class CrashAfterEffect(FaultHook):
    """Crashes once between the tool's effect and its record, when armed."""

    def __init__(self, marker_dir: Path) -> None:
        super().__init__(FaultSpec(seed=0, kill_ratio=0.0, points=["after_effect"]), marker_dir)
        self.armed = False

    def at(self, point: str, *, run_id: str, step: int) -> None:
        if point == "after_effect" and self.armed:
            self.armed = False
            raise Crash()


@dataclass
class Desk:
    fleet: Fleet
    store: SQLiteStore
    chain: ToolStage
    book: ApprovalBook
    clock: MovableClock
    faults: CrashAfterEffect

    def notifications(self) -> list[str]:
        path = self.fleet.state_path("refund_desk.db")
        if not path.exists():
            return []
        with sqlite3.connect(path) as conn:
            return [r[0] for r in conn.execute("SELECT idempotency_key FROM notifications ORDER BY n")]

    def call(self, call_id: str = KEY) -> ToolCallInput:
        ctx = CallContext(
            run_id="run_1",
            session_id="s",
            agent="desk",
            identity="svc-refund-desk@acme",
            step=3,
            deadline_ts=self.clock.now() + 30,
        )
        return ToolCallInput(ctx, ToolCall(id=call_id, name="notify_customer", arguments=dict(NOTIFY)))

    async def crashed_attempt(self) -> None:
        """The ledger as a crash between the effect and its record leaves it: an old, unsettled attempt."""
        await self.store.begin_effect(
            KEY,
            run_id="run_1",
            tool="notify_customer",
            fingerprint=call_fingerprint("notify_customer", NOTIFY),
            now=0.0,
            expected_attempts=0,
        )

    async def held(self) -> EffectInDoubtError:
        with pytest.raises(EffectInDoubtError) as info:
            await self.chain.call_tool(self.call())
        return info.value


@pytest.fixture
async def desk(tmp_path: Path, clock: MovableClock) -> AsyncIterator[Desk]:
    fleet = load_fleet(FLEET, state_dir=tmp_path / "state")
    tools = {
        n: t.model_copy(update={"timeout_s": 0.4}) if t.side_effect else t for n, t in fleet.tools.items()
    }
    limit = SpendingLimitSpec(tool="issue_refund", amount_arg="amount_usd", per_agent_per_day_usd=1000)
    fleet = fleet.model_copy(
        update={"store": StoreSpec(), "tools": tools, "spending": SpendingSpec(limits=[limit])}
    )
    assert governance_enabled(fleet)
    store = open_store(fleet)
    assert isinstance(store, SQLiteStore)
    faults = CrashAfterEffect(tmp_path / "markers")
    gateway = ToolGateway(fleet, invoker=None, clock=clock)
    chain = build_tool_chain(
        gateway, store=store, tracer=TracerProvider().get_tracer("t"), clock=clock, faults=faults
    )
    book = Governance.open(fleet, store=store, clock=clock).approvals
    yield Desk(fleet, store, chain, book, clock, faults)
    await store.close()


async def test_in_doubt_call_is_held_as_a_pending_approval_naming_the_call(desk: Desk) -> None:
    await desk.crashed_attempt()
    held = await desk.held()
    approval_id = held.extra["approval_id"]
    assert held.extra == {
        "idempotency_key": KEY,
        "tool": "notify_customer",
        "attempts": 1,
        "approval_id": approval_id,
        "approval_url": f"/v1/approvals/{approval_id}",
    }
    assert held.slug == "effect-in-doubt" and approval_id in held.detail
    [approval] = await desk.book.find_all(status="pending")
    assert approval.approval_id == approval_id
    assert (approval.run_id, approval.call_id, approval.tool, approval.arguments) == (
        "run_1",
        f"{KEY}:in-doubt:1",
        "notify_customer",
        NOTIFY,
    )
    context = approval.context
    assert context["policies"] == [IN_DOUBT_POLICY]
    assert (context["tool"], context["arguments"], context["idempotency_key"], context["attempts"]) == (
        "notify_customer",
        NOTIFY,
        KEY,
        1,
    )
    assert "not idempotent" in context["reason"] and "never recorded" in context["reason"]
    # The same call stays held by the same approval; nothing ran.
    assert (await desk.held()).extra["approval_id"] == approval_id
    assert len(await desk.book.find_all()) == 1
    effect = await desk.store.get_effect(KEY)
    assert effect is not None and (effect.status, effect.attempts) == ("needs_approval", 1)
    assert desk.notifications() == []


async def test_approved_in_doubt_call_runs_once_more_with_the_same_key(desk: Desk) -> None:
    await desk.crashed_attempt()
    approval_id = (await desk.held()).extra["approval_id"]
    await desk.book.decide(approval_id, approver="alice", decision="approve", reason="no message was sent")
    # Two resumers (the approver's request and the sweeper) and more: the effect is repeated once.
    outs = await asyncio.gather(*(desk.chain.call_tool(desk.call()) for _ in range(4)))
    assert all(not o.is_error and o.result == outs[0].result for o in outs)
    assert outs[0].result == {"notified": True, "order_id": "12", "refund_id": "rf_1"}
    assert desk.notifications() == [KEY], "repeated once, with the idempotency key of the first attempt"
    effect = await desk.store.get_effect(KEY)
    assert effect is not None and (effect.status, effect.attempts) == ("done", 2)
    again = await desk.chain.call_tool(desk.call())  # a later resume is answered from the ledger
    assert again.result == outs[0].result and desk.notifications() == [KEY]


async def test_denied_in_doubt_call_is_refused_and_never_repeated(desk: Desk) -> None:
    await desk.crashed_attempt()
    approval_id = (await desk.held()).extra["approval_id"]
    await desk.book.decide(approval_id, approver="alice", decision="deny", reason="it was sent; reconciled")
    for _ in range(2):  # refused every time the call comes back, never run
        out = await desk.chain.call_tool(desk.call())
        assert out.is_error and out.result["error_type"] == "approval-denied"
        assert "not repeated" in out.result["error"] and approval_id in out.result["error"]
    assert desk.notifications() == []
    effect = await desk.store.get_effect(KEY)
    assert effect is not None and (effect.status, effect.attempts) == ("needs_approval", 1)
    refusals = await desk.store.query_audit(AuditQuery(kind="policy_decision"))
    assert [(r.payload["stage"], r.payload["outcome"], r.payload["approval_id"]) for r in refusals] == [
        ("effects", "deny", approval_id)
    ] * 2
    assert refusals[0].payload["idempotency_key"] == KEY and refusals[0].payload["call_id"] == KEY


async def test_an_expired_approval_is_a_deny(desk: Desk) -> None:
    await desk.crashed_attempt()
    approval_id = (await desk.held()).extra["approval_id"]
    desk.clock.offset_s = desk.fleet.approvals.timeout_s + 1
    out = await desk.chain.call_tool(desk.call())
    assert out.is_error and out.result["error_type"] == "approval-denied" and "expired" in out.result["error"]
    assert (await desk.book.get(approval_id)).status == "expired"
    assert desk.notifications() == []
    effect = await desk.store.get_effect(KEY)
    assert effect is not None and effect.status == "needs_approval"


async def test_a_crash_of_the_approved_repeat_needs_a_new_approval(desk: Desk) -> None:
    await desk.crashed_attempt()
    first = (await desk.held()).extra["approval_id"]
    await desk.book.decide(first, approver="alice", decision="approve", reason="not sent")
    desk.faults.armed = True
    with pytest.raises(Crash):  # the repeat sends the message, then the process dies before the record
        await desk.chain.call_tool(desk.call())
    assert desk.notifications() == [KEY]
    desk.clock.offset_s = 5  # that attempt is over (older than the tool's timeout), its outcome unknown
    held = await desk.held()
    assert held.extra["attempts"] == 2 and held.extra["approval_id"] != first
    second = await desk.book.get(held.extra["approval_id"])
    assert (second.status, second.call_id, second.context["attempts"]) == ("pending", f"{KEY}:in-doubt:2", 2)
    # The first approval covered attempt 1 only: nothing runs until someone decides about attempt 2.
    assert desk.notifications() == [KEY]
    await desk.book.decide(second.approval_id, approver="alice", decision="deny", reason="it was sent")
    assert (await desk.chain.call_tool(desk.call())).is_error
    assert desk.notifications() == [KEY]


async def test_a_policy_approval_of_the_same_call_does_not_decide_the_in_doubt_attempt(desk: Desk) -> None:
    # A policy hold approved this call before it first ran; that is no decision about its unknown outcome.
    policy = PolicyDecision(True, ("approval",), ("notify-needs-a-person",))
    approved = await desk.book.hold(desk.call(), policy, None)
    await desk.book.decide(approved.approval_id, approver="alice", decision="approve", reason="ok to send")
    await desk.crashed_attempt()
    held = await desk.held()
    assert held.extra["approval_id"] != approved.approval_id
    assert (await desk.book.get(held.extra["approval_id"])).status == "pending"
    assert desk.notifications() == []


async def test_only_an_in_doubt_approval_takes_a_result_recorded_by_hand(desk: Desk) -> None:
    decision = PolicyDecision(
        allowed=True, obligations=("approval",), policies=("refunds.over_200",), reasons=("big",), context={}
    )
    policy_held = await desk.book.hold(desk.call("run_1:s1:c0"), decision, None)
    gov = Governance.open(desk.fleet, store=desk.store, clock=desk.clock)
    with pytest.raises(ValidationFailedError, match="not about an in-doubt side effect"):
        await settle_in_doubt(gov, policy_held.approval_id, approver="ops", result={"ok": True}, reason="")
    assert (await desk.book.get(policy_held.approval_id)).status == "pending"


async def test_an_in_doubt_payment_needs_as_many_approvers_as_the_payment(
    tmp_path: Path, clock: MovableClock
) -> None:
    """Repeating a refund moves money again: above the four-eyes threshold, two people decide."""
    fleet = load_fleet(FLEET, state_dir=tmp_path / "state")
    tools = dict(fleet.tools)
    tools["issue_refund"] = tools["issue_refund"].model_copy(update={"idempotent": False, "timeout_s": 0.4})
    limit = SpendingLimitSpec(tool="issue_refund", amount_arg="amount_usd", per_agent_per_day_usd=10_000)
    approvals = fleet.approvals.model_copy(update={"two_approvers_above_usd": 200.0})
    fleet = fleet.model_copy(
        update={
            "store": StoreSpec(),
            "tools": tools,
            "spending": SpendingSpec(limits=[limit]),
            "approvals": approvals,
        }
    )
    store = open_store(fleet)
    gateway = ToolGateway(fleet, invoker=None, clock=clock)
    chain = build_tool_chain(gateway, store=store, tracer=TracerProvider().get_tracer("t"), clock=clock)
    book = Governance.open(fleet, store=store, clock=clock).approvals
    ctx = CallContext(run_id="run_1", session_id="s", agent="desk", identity="svc-refund-desk@acme", step=2)
    try:
        for n, amount in enumerate((450.0, 20.0)):
            key, args = f"run_1:s2:c{n}", {"order_id": "12", "amount_usd": amount}
            await store.begin_effect(
                key,
                run_id="run_1",
                tool="issue_refund",
                fingerprint=call_fingerprint("issue_refund", args),
                now=0.0,
                expected_attempts=0,
            )
            with pytest.raises(EffectInDoubtError) as held:
                await chain.call_tool(
                    ToolCallInput(ctx, ToolCall(id=key, name="issue_refund", arguments=args))
                )
            approval = await book.get(held.value.extra["approval_id"])
            assert (approval.amount_usd, approval.approvals_needed) == (amount, 2 if amount > 200 else 1)
    finally:
        await store.close()
