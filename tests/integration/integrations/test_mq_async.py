"""The bank case: the backend takes 800 ms, the tool's timeout is 500 ms, the tool declares
``async_after_ms``. The call goes asynchronous instead of failing, its reply is recorded durably, and it
completes when the reply arrives, also when the gateway restarted in between."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from legacy_helpers import inquiries, legacy_fleet, until

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


# ------------------------------------------------------------------ run parking (async_mode: park)


async def _reply_queue_depth(queue: str) -> int:
    import aio_pika
    from legacy_helpers import RABBIT_URL

    connection = await aio_pika.connect_robust(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(f"{queue}.reply", passive=True)
        return int(declared.declaration_result.message_count or 0)


async def test_bank_case_parks_the_run_and_resumes_it_when_the_reply_arrives(
    tmp_path: Path, rabbit_queue: str, start_responder: Any, make_fleet: Any
) -> None:
    state = tmp_path / "order-system"
    responder = start_responder(rabbit_queue, state=state, latency_ms=800)
    fleet = legacy_fleet(tmp_path / "state", queue=rabbit_queue, lookup_order_async={"async_mode": "park"})
    legacy = make_fleet(fleet)
    assert legacy.resumer is not None
    callbacks: list[PendingRecord] = []

    async def on_reply(record: PendingRecord) -> None:
        callbacks.append(record)

    executor = legacy.gateway.executor("lookup_order_async")
    assert isinstance(executor, MqToolExecutor)
    executor.add_listener(on_reply)
    await legacy.resumer.start()

    parked = await legacy.run("orders-async", "Where is order 1004?")
    # The caller gets the run back at once: parked, not failed, nothing shown to the model.
    assert parked.status == "waiting", parked.error
    assert parked.error is not None and parked.error["status"] == 202
    assert parked.error["type"].endswith("/tool-pending")
    pending_step = next(s for s in parked.steps if s["kind"] == "tool")
    cid = correlation_id_for("lookup_order_async", pending_step["call_id"])
    assert pending_step["pending"] is True and pending_step["correlation_id"] == cid
    assert [s["kind"] for s in parked.steps] == ["model", "tool"]  # no second model call yet

    async def settled() -> bool:
        record = await legacy.loops["orders-async"]._store.get_run(parked.run_id)
        return record is not None and record.status not in ("waiting", "running")

    await until(settled)
    await legacy.resumer.drain()
    done = await legacy.loops["orders-async"]._store.get_run(parked.run_id)
    assert done is not None and done.status == "completed", done
    assert done.output is not None and done.output.startswith("Order 1004 (desk lamp) is delivered")
    tool_steps = [s for s in done.steps if s["kind"] == "tool"]
    assert len(tool_steps) == 1 and tool_steps[0]["is_error"] is False  # the answered call, once
    assert legacy.resumer.resumed == [parked.run_id]
    assert [(r.correlation_id, r.state) for r in callbacks] == [(cid, "replied")]
    assert executor.bridge.stats.sent == 1  # the resumed call was answered from the record
    assert responder.text().count(f"committed {cid}") == 1 and inquiries(state, cid) == 1


async def test_bank_case_parked_run_resumes_after_a_restart(
    tmp_path: Path, rabbit_queue: str, start_responder: Any, make_fleet: Any
) -> None:
    """The fleet (gateway, loops, resumer) goes away between parking and the reply; a new one resumes the
    run from its parked progress when it starts, and the effect happens once."""
    state = tmp_path / "order-system"
    # Slow enough that the first fleet is surely gone before the reply comes.
    responder = start_responder(rabbit_queue, state=state, latency_ms=3000)
    fleet = legacy_fleet(tmp_path / "state", queue=rabbit_queue, lookup_order_async={"async_mode": "park"})
    first = make_fleet(fleet)
    assert first.resumer is not None
    await first.resumer.start()
    parked = await first.run("orders-async", "Where is order 1001?")
    assert parked.status == "waiting", parked.error
    await first.aclose()  # the whole fleet goes away while the request is in flight
    cid = correlation_id_for(
        "lookup_order_async", next(s for s in parked.steps if s["kind"] == "tool")["call_id"]
    )

    # The responder answers while nothing listens: the reply waits in the durable reply queue.
    async def reply_queued() -> bool:
        return await _reply_queue_depth(rabbit_queue) >= 1

    await until(reply_queued)
    assert first.resumer.resumed == []

    second = make_fleet(fleet)
    assert second.resumer is not None
    callbacks: list[PendingRecord] = []

    async def on_reply(record: PendingRecord) -> None:
        callbacks.append(record)

    executor = second.gateway.executor("lookup_order_async")
    assert isinstance(executor, MqToolExecutor)
    executor.add_listener(on_reply)
    await second.resumer.start()  # picks the reply up from the queue; its listener resumes the run
    store = second.loops["orders-async"]._store

    async def settled() -> bool:
        record = await store.get_run(parked.run_id)
        return record is not None and record.status not in ("waiting", "running")

    await until(settled)
    await second.resumer.drain()
    done = await store.get_run(parked.run_id)
    assert done is not None and done.status == "completed", done
    assert done.output is not None and done.output.startswith("Order 1001 (backpack) is shipped")
    assert second.resumer.resumed == [parked.run_id]
    assert [(r.correlation_id, r.state, r.run_id) for r in callbacks] == [(cid, "replied", parked.run_id)]
    assert executor.bridge.stats.sent == 0  # nothing sent again after the restart
    assert responder.text().count(f"committed {cid}") == 1 and inquiries(state, cid) == 1
    # Exactly once: resuming again (a second replica's sweep, a late listener) changes nothing.
    assert await second.resumer.sweep() == 0
    assert await second.resumer.resume(parked.run_id) is None


async def test_a_reply_recorded_before_a_crash_is_resumed_by_the_startup_sweep(
    tmp_path: Path, rabbit_queue: str, start_responder: Any, make_fleet: Any
) -> None:
    """The reply was recorded (and acknowledged) but the run was never resumed: the process died in
    between. The next resumer's startup sweep finds it."""
    start_responder(rabbit_queue, state=tmp_path / "order-system", latency_ms=800)
    fleet = legacy_fleet(tmp_path / "state", queue=rabbit_queue, lookup_order_async={"async_mode": "park"})
    first = make_fleet(fleet)
    assert first.resumer is not None
    first.resumer.stop()  # "crashed" before it could resume: the reply is recorded, the run not resumed
    parked = await first.run("orders-async", "Where is order 1004?")
    assert parked.status == "waiting", parked.error
    executor = first.gateway.executor("lookup_order_async")
    assert isinstance(executor, MqToolExecutor) and executor.pending is not None
    cid = correlation_id_for(
        "lookup_order_async", next(s for s in parked.steps if s["kind"] == "tool")["call_id"]
    )

    async def recorded() -> bool:
        assert executor.pending is not None
        record = await executor.pending.get(cid)
        return record is not None and record.state == "replied"

    await executor.bridge.start()
    await until(recorded)  # the bridge recorded the reply; no one resumed the run
    await first.aclose()
    store = first.loops["orders-async"]._store
    waiting = await store.get_run(parked.run_id)
    assert waiting is not None and waiting.status == "waiting"

    second = make_fleet(fleet)
    assert second.resumer is not None
    assert await second.resumer.start() == 1  # the sweep resumed it
    done = await store.get_run(parked.run_id)
    assert done is not None and done.status == "completed", done
    assert await second.resumer.sweep() == 0  # and only once


async def test_a_delegated_run_that_parks_parks_its_caller_and_both_resume(
    tmp_path: Path, rabbit_queue: str, start_responder: Any, make_fleet: Any
) -> None:
    """``desk`` delegates to ``orders-async``, whose call parks: both runs wait, and the reply resumes the
    root run, whose repeated delegation continues the parked delegated run (same derived id)."""
    from raygent.core.config import AgentToolSpec, OfflineModelSpec, OfflineRule

    state = tmp_path / "order-system"
    responder = start_responder(rabbit_queue, state=state, latency_ms=800)
    fleet = legacy_fleet(tmp_path / "state", queue=rabbit_queue, lookup_order_async={"async_mode": "park"})
    model = fleet.models["mainframe-desk"]
    assert isinstance(model, OfflineModelSpec)
    rules = [
        *model.rules,
        OfflineRule(match=r"(?i)order", call="ask_slow_orders", args={"input": "{user}"}),
        OfflineRule(after_tool="ask_slow_orders", say="Desk: {result.answer}"),
    ]
    desk = fleet.agents["orders-async"].model_copy(
        update={"identity": "svc-desk@acme", "tools": ["ask_slow_orders"]}
    )
    fleet = fleet.model_copy(
        update={
            "models": {**fleet.models, "mainframe-desk": model.model_copy(update={"rules": rules})},
            "tools": {
                **fleet.tools,
                "ask_slow_orders": AgentToolSpec(
                    kind="agent", agent="orders-async", description="slow orders"
                ),
            },
            "agents": {**fleet.agents, "desk": desk},
        }
    )
    legacy = make_fleet(fleet)
    assert legacy.resumer is not None
    await legacy.resumer.start()
    parked = await legacy.run("desk", "Where is order 1004?")
    assert parked.status == "waiting", parked.error
    store = legacy.loops["desk"]._store
    child_id = next(r.run_id for r in await store.list_runs() if r.agent == "orders-async")
    assert child_id.startswith(parked.run_id + "-")
    child = await store.get_run(child_id)
    assert child is not None and child.status == "waiting"

    async def settled() -> bool:
        record = await store.get_run(parked.run_id)
        return record is not None and record.status not in ("waiting", "running")

    await until(settled)
    await legacy.resumer.drain()
    done = await store.get_run(parked.run_id)
    assert done is not None and done.status == "completed", done
    assert done.output is not None and done.output.startswith("Desk: Order 1004 (desk lamp) is delivered")
    child = await store.get_run(child_id)
    assert child is not None and child.status == "completed"
    assert legacy.resumer.resumed == [parked.run_id]  # the root run, once
    cid = correlation_id_for(
        "lookup_order_async", next(s for s in child.steps if s["kind"] == "tool")["call_id"]
    )
    assert responder.text().count(f"committed {cid}") == 1 and inquiries(state, cid) == 1


async def test_the_served_gateway_starts_its_reply_resumer_from_its_health_check(
    tmp_path: Path, rabbit_queue: str
) -> None:
    """In a served fleet the gateway replica hosts the resumer: Serve's periodic ``check_health`` starts it
    (consuming the durable reply queue) once, before any tool call arrives."""
    from raygent.governance.gateway_actor import GatewayActor

    fleet = legacy_fleet(tmp_path / "state", queue=rabbit_queue, lookup_order_async={"async_mode": "park"})
    actor = GatewayActor(fleet, "legacy")
    executor = actor._gateway.executor("lookup_order_async")
    assert isinstance(executor, MqToolExecutor) and actor._resumer is not None
    try:
        await actor.check_health()
        task = actor._resuming
        assert task is not None

        async def listening() -> bool:
            return executor.bridge._started

        await until(listening)
        await actor.check_health()
        assert actor._resuming is task and not task.done()  # one resumer per replica
    finally:
        if actor._resuming is not None:
            actor._resuming.cancel()
        await actor._gateway.aclose()
    waits = legacy_fleet(tmp_path / "state2", queue=rabbit_queue)
    assert GatewayActor(waits, "legacy")._resumer is None  # no parking tool: no resumer


async def test_a_parked_run_whose_reply_never_comes_ends_with_a_clear_timeout(
    tmp_path: Path, rabbit_queue: str, make_fleet: Any
) -> None:
    """No responder: the call's ``async_timeout_s`` passes; the sweep expires the call and resumes the
    run, whose repeated call fails clearly, so the run ends instead of waiting forever."""
    fleet = legacy_fleet(
        tmp_path / "state",
        queue=rabbit_queue,
        lookup_order_async={"async_mode": "park", "async_timeout_s": 3.0},
    )
    legacy = make_fleet(fleet)
    assert legacy.resumer is not None
    await legacy.resumer.start()
    parked = await legacy.run("orders-async", "Where is order 1004?")
    assert parked.status == "waiting", parked.error
    executor = legacy.gateway.executor("lookup_order_async")
    assert isinstance(executor, MqToolExecutor) and executor.pending is not None
    cid = parked.error["correlation_id"] if parked.error else ""
    record = await executor.pending.get(cid)
    assert record is not None and record.state == "pending"
    assert await legacy.resumer.sweep() == 0  # not overdue yet: the run keeps waiting

    async def overdue() -> bool:
        return time.time() > record.deadline_ts

    await until(overdue)
    assert await legacy.resumer.sweep() == 1
    done = await legacy.loops["orders-async"]._store.get_run(parked.run_id)
    assert done is not None and done.status == "completed", done
    assert done.output == "The order system did not answer: the call " + parked.error["call_id"] + (
        " expired before its reply arrived"
    )
    expired = await executor.pending.get(cid)
    assert expired is not None and expired.state == "expired"
    assert await legacy.resumer.sweep() == 0  # once
