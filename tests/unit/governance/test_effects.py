"""The effect ledger in the gateway's real tool chain (refund-desk tools, SQLite store and ledger)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet, StoreSpec
from raygent.core.fleetfile import load_fleet
from raygent.core.interceptors import CallContext, ToolCallInput, ToolStage
from raygent.core.messages import ToolCall
from raygent.core.store import SQLiteStore, open_store
from raygent.core.store.base import AuditQuery
from raygent.governance.effects import call_fingerprint
from raygent.governance.errors import EffectInDoubtError
from raygent.governance.gateway import ToolGateway
from raygent.governance.gateway_actor import build_tool_chain

FLEET = Path(__file__).resolve().parents[3] / "examples" / "refund_desk" / "fleet.yaml"


@dataclass
class Desk:
    fleet: Fleet
    store: SQLiteStore
    chain: ToolStage

    def invocations(self, tool: str) -> int:
        path = self.fleet.state_path("refund_desk.db")
        if not path.exists():
            return 0
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM invocations WHERE tool = ?", (tool,)).fetchone()[0])

    def refunds(self) -> list[tuple[str, float]]:
        with sqlite3.connect(self.fleet.state_path("refund_desk.db")) as conn:
            return conn.execute("SELECT idempotency_key, amount_usd FROM refunds").fetchall()


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    fleet = load_fleet(FLEET, state_dir=tmp_path / "state")
    tools = {
        n: t.model_copy(update={"timeout_s": 0.4}) if t.side_effect else t for n, t in fleet.tools.items()
    }
    fleet = fleet.model_copy(update={"store": StoreSpec(), "tools": tools})
    store = open_store(fleet)
    assert isinstance(store, SQLiteStore)
    clock = SystemClock()
    gateway = ToolGateway(fleet, invoker=None, clock=clock)
    chain = build_tool_chain(gateway, store=store, tracer=TracerProvider().get_tracer("t"), clock=clock)
    yield Desk(fleet, store, chain)
    await store.close()


def call(tool: str, call_id: str = "run_1:s2:c0", **arguments: object) -> ToolCallInput:
    ctx = CallContext(
        run_id="run_1",
        session_id="s",
        agent="desk",
        identity="svc-refund-desk@acme",
        step=2,
        deadline_ts=time.time() + 30,
    )
    return ToolCallInput(ctx, ToolCall(id=call_id, name=tool, arguments=dict(arguments)))


REFUND = {"order_id": "12", "amount_usd": 22.0}
NOTIFY = {"order_id": "12", "refund_id": "rf_1"}


async def test_side_effect_is_recorded_and_never_repeated(desk: Desk) -> None:
    first = await desk.chain.call_tool(call("issue_refund", **REFUND))
    assert not first.is_error and first.result["status"] == "issued"
    effect = await desk.store.get_effect("run_1:s2:c0")
    assert effect is not None and (effect.status, effect.attempts, effect.tool) == ("done", 1, "issue_refund")
    assert effect.outcome is not None and effect.outcome["result"] == first.result
    assert effect.fingerprint == call_fingerprint("issue_refund", REFUND)
    audited = len(await desk.store.query_audit(AuditQuery(kind="tool_call")))
    again = await desk.chain.call_tool(call("issue_refund", **REFUND))
    assert (again.result, again.is_error) == (first.result, False)
    assert desk.invocations("issue_refund") == 1
    # Answered from the ledger ahead of governance and audit: nothing is decided or executed again.
    assert len(await desk.store.query_audit(AuditQuery(kind="tool_call"))) == audited == 1
    assert desk.refunds() == [("run_1:s2:c0", 22.0)]


async def test_tools_without_side_effects_bypass_the_ledger(desk: Desk) -> None:
    out = await desk.chain.call_tool(call("lookup_order", "run_1:s1:c0", order_id="12"))
    assert out.result["refundable"] is True
    assert await desk.store.get_effect("run_1:s1:c0") is None


async def test_unknown_outcome_of_an_idempotent_tool_is_retried_with_the_same_key(desk: Desk) -> None:
    # A crash between the effect and its record: the refund row exists, the ledger says "intended".
    first = await desk.chain.call_tool(call("issue_refund", **REFUND))
    with sqlite3.connect(desk.store.path) as conn:
        conn.execute("UPDATE effects SET status = 'intended', outcome = NULL, started_at = 0")
    retried = await desk.chain.call_tool(call("issue_refund", **REFUND))
    assert retried.result == first.result
    effect = await desk.store.get_effect("run_1:s2:c0")
    assert effect is not None and (effect.status, effect.attempts) == ("done", 2)
    assert desk.invocations("issue_refund") == 2, "the tool ran again"
    assert desk.refunds() == [("run_1:s2:c0", 22.0)], "and refunded once: it honours the key"


async def test_unknown_outcome_of_a_non_idempotent_tool_goes_to_a_person(desk: Desk) -> None:
    await desk.store.begin_effect(
        "run_1:s3:c0",
        run_id="run_1",
        tool="notify_customer",
        fingerprint=call_fingerprint("notify_customer", NOTIFY),
        now=0.0,  # long ago: that attempt is over, its outcome unknown
        expected_attempts=0,
    )
    with pytest.raises(EffectInDoubtError) as info:
        await desk.chain.call_tool(call("notify_customer", "run_1:s3:c0", **NOTIFY))
    assert info.value.extra == {"idempotency_key": "run_1:s3:c0", "tool": "notify_customer", "attempts": 1}
    assert "not idempotent" in info.value.detail
    assert desk.invocations("notify_customer") == 0
    effect = await desk.store.get_effect("run_1:s3:c0")
    assert effect is not None and effect.status == "needs_approval" and "not idempotent" in effect.reason
    with pytest.raises(EffectInDoubtError):  # and it stays held
        await desk.chain.call_tool(call("notify_customer", "run_1:s3:c0", **NOTIFY))


async def test_an_attempt_still_running_is_waited_for(desk: Desk) -> None:
    key = "run_1:s3:c0"
    fingerprint = call_fingerprint("notify_customer", NOTIFY)
    await desk.store.begin_effect(
        key,
        run_id="run_1",
        tool="notify_customer",
        fingerprint=fingerprint,
        now=time.time(),
        expected_attempts=0,
    )

    async def original_finishes() -> None:
        await asyncio.sleep(0.15)
        outcome = {"result": {"notified": True, "from": "original"}, "is_error": False}
        await desk.store.settle_effect(key, status="done", outcome=outcome, reason="", now=time.time())

    finisher = asyncio.create_task(original_finishes())
    out = await desk.chain.call_tool(call("notify_customer", key, **NOTIFY))
    await finisher
    assert out.result == {"notified": True, "from": "original"}
    assert desk.invocations("notify_customer") == 0


async def test_same_id_with_other_arguments_is_refused(desk: Desk) -> None:
    await desk.chain.call_tool(call("issue_refund", **REFUND))
    out = await desk.chain.call_tool(call("issue_refund", order_id="12", amount_usd=99.0))
    assert out.is_error and "other arguments" in out.result["error"]
    assert desk.refunds() == [("run_1:s2:c0", 22.0)]


async def test_concurrent_duplicates_run_the_effect_once(desk: Desk) -> None:
    outs = await asyncio.gather(
        *(desk.chain.call_tool(call("notify_customer", "k:s1:c0", **NOTIFY)) for _ in range(6))
    )
    assert all(o.result == outs[0].result and not o.is_error for o in outs)
    assert desk.invocations("notify_customer") == 1
