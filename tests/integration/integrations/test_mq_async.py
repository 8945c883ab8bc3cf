"""The bank case: the backend takes 800 ms, the tool's timeout is 500 ms, the tool declares
``async_after_ms``. The call goes asynchronous instead of failing, its reply is recorded durably, and it
completes when the reply arrives, also when the gateway restarted in between."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from legacy_helpers import inquiries, legacy_fleet

from raygent.core.clock import SystemClock
from raygent.core.config import MqToolSpec
from raygent.core.interceptors import CallContext, ToolCallInput
from raygent.core.messages import ToolCall
from raygent.governance.gateway import ToolGateway
from raygent.integrations.mq.envelope import correlation_id_for
from raygent.integrations.mq.pending import PendingRecord, SQLitePendingReplies
from raygent.integrations.mq.tool import MqToolExecutor

pytestmark = pytest.mark.integration


async def test_bank_case_run_completes_through_the_async_path(
    tmp_path: Path, rabbit_queue: str, start_responder: Any, make_fleet: Any
) -> None:
    state = tmp_path / "order-system"
    responder = start_responder(rabbit_queue, state=state, latency_ms=800)
    fleet = legacy_fleet(tmp_path / "state", queue=rabbit_queue)
    spec = fleet.tools["lookup_order_async"]
    assert isinstance(spec, MqToolSpec) and spec.timeout_s == 0.5 and spec.async_after_ms == 300
    legacy = make_fleet(fleet)
    executor = legacy.gateway.executor("lookup_order_async")
    assert isinstance(executor, MqToolExecutor)
    callbacks: list[PendingRecord] = []

    async def on_reply(record: PendingRecord) -> None:
        callbacks.append(record)

    executor.add_listener(on_reply)
    out = await legacy.run("orders-async", "Where is order 1004?")

    assert out.status == "completed", out.error
    assert out.output is not None and out.output.startswith("Order 1004 (desk lamp) is delivered")
    tool_step = next(s for s in out.steps if s["kind"] == "tool")
    assert tool_step["is_error"] is False and tool_step["latency_ms"] >= 500  # past the sync timeout
    cid = correlation_id_for("lookup_order_async", tool_step["call_id"])
    # The status callback fired once, with the durably recorded reply.
    assert [(r.correlation_id, r.state, r.run_id) for r in callbacks] == [(cid, "replied", out.run_id)]
    stored = await SQLitePendingReplies(tmp_path / "state" / "mq_pending.db").get(cid)
    assert stored is not None and stored.state == "replied" and stored.duplicate_replies == 0
    assert responder.text().count(f"committed {cid}") == 1 and inquiries(state, cid) == 1


async def test_parked_call_survives_a_gateway_restart(
    tmp_path: Path, rabbit_queue: str, start_responder: Any
) -> None:
    state = tmp_path / "order-system"
    responder = start_responder(rabbit_queue, state=state, latency_ms=1500)
    fleet = legacy_fleet(tmp_path / "state", queue=rabbit_queue, lookup_order_async={"async_mode": "park"})
    call = ToolCall(id="run-bank:s1:c0", name="lookup_order_async", arguments={"order_id": "1001"})
    agent = fleet.agents["orders-async"]

    def request() -> ToolCallInput:
        ctx = CallContext(run_id="run-bank", session_id="s", agent="orders-async", identity=agent.identity)
        return ToolCallInput(ctx, call)

    cid = correlation_id_for("lookup_order_async", call.id)
    first = ToolGateway(fleet, invoker=None, clock=SystemClock())
    try:
        parked = await first.call_tool(request())
    finally:
        await first.aclose()  # the gateway goes away while the request is in flight
    assert parked.is_error and parked.result["error_type"] == "tool-pending"
    assert parked.result["correlation_id"] == cid

    # The responder answers while no gateway is listening: the reply waits in the durable reply queue.
    await asyncio.to_thread(responder.wait_for, f"committed {cid}")
    await asyncio.sleep(2.0)

    second = ToolGateway(fleet, invoker=None, clock=SystemClock())
    executor = second.executor("lookup_order_async")
    assert isinstance(executor, MqToolExecutor)
    arrived = asyncio.Event()

    async def on_reply(record: PendingRecord) -> None:
        if record.correlation_id == cid:
            arrived.set()

    executor.add_listener(on_reply)
    try:
        await executor.bridge.start()
        await asyncio.wait_for(arrived.wait(), 10)  # the restarted gateway picked the reply up
        resumed = await second.call_tool(request())  # the run resumes: same call, same id
    finally:
        await second.aclose()
    assert resumed.is_error is False and resumed.result["status"] == "shipped"
    assert executor.bridge.stats.sent == 0  # answered from the record, not sent again
    assert responder.text().count(f"committed {cid}") == 1 and inquiries(state, cid) == 1


async def test_without_async_after_ms_a_slow_backend_fails_the_call_clearly(
    tmp_path: Path, rabbit_queue: str, start_responder: Any, make_fleet: Any
) -> None:
    start_responder(rabbit_queue, latency_ms=800)
    fleet = legacy_fleet(
        tmp_path / "state",
        queue=rabbit_queue,
        lookup_order={"timeout_s": 0.5, "resend_after_s": None},
    )
    legacy = make_fleet(fleet)
    out = await legacy.run("orders", "Where is order 1004?")
    assert out.status == "completed"
    assert out.output == "The order system did not answer: no reply within 0.5 s"
    assert next(s for s in out.steps if s["kind"] == "tool")["is_error"] is True
