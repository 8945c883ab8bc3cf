"""A run parks on a tool call that answers ``tool-pending`` (``async_mode: park``) and resumes once.

The step loop runs over the real offline router and SQLite store; the tool stage is a stand-in for the
gateway (no broker): it answers ``tool-pending`` until the test says the reply is there.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from raygent.actors.steploop import AgentLoop
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet, MqToolSpec
from raygent.core.errors import ConflictError
from raygent.core.fleetfile import load_fleet
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolStage
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store import SQLiteStore, open_store
from raygent.governance.parking import ParkingLot, has_parkable_tools
from raygent.integrations.resumer import ReplyResumer, root_run_id
from raygent.router.actor import build_model_chain
from raygent.router.router import Router

LEGACY = Path(__file__).resolve().parents[3] / "examples" / "legacy_mainframe" / "fleet.yaml"
AGENT = "orders-async"


def legacy_fleet(state: Path, mode: str) -> Fleet:
    fleet = load_fleet(LEGACY, state_dir=state)
    tools = dict(fleet.tools)
    spec = tools["lookup_order_async"]
    assert isinstance(spec, MqToolSpec)
    tools["lookup_order_async"] = spec.model_copy(update={"async_mode": mode})
    return fleet.model_copy(update={"tools": tools})


class SlowBackend(ToolStage):
    """Answers ``tool-pending`` until ``replied`` is set, then the recorded reply (same call id)."""

    def __init__(self) -> None:
        self.replied = False
        self.calls: list[str] = []

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        self.calls.append(inp.call.id)
        if not self.replied:
            result: dict[str, Any] = {
                "error": "no reply within 300 ms; the request is in flight and its reply will be recorded",
                "error_type": "tool-pending",
                "correlation_id": f"cid-{inp.call.id}",
            }
            return ToolCallOutput(inp.call.id, inp.call.name, result, is_error=True, latency_s=0.3)
        reply = {
            "order_id": inp.call.arguments["order_id"],
            "item": "desk lamp",
            "status": "delivered",
            "balance_due_usd": 0,
            "detail": "Signed for.",
        }
        return ToolCallOutput(inp.call.id, inp.call.name, reply, is_error=False, latency_s=0.01)


class Harness:
    def __init__(self, fleet: Fleet, store: SQLiteStore, backend: SlowBackend) -> None:
        clock = SystemClock()
        tracer = TracerProvider().get_tracer("test")
        self.router = Router.from_fleet(fleet, clock=clock)
        model = build_model_chain(self.router, store=store, tracer=tracer, clock=clock)
        self.loop = AgentLoop(
            fleet, AGENT, store=store, model=model, tools=backend, tracer=tracer, clock=clock
        )
        self.resumer = ReplyResumer(
            {}, store=store, invoker=self, clock=clock, deadlines_s={AGENT: fleet.agents[AGENT].deadline_s}
        )

    async def invoke(self, run: RunInput) -> RunOutput:
        return await self.loop.run(run)


@pytest.fixture
async def parking(tmp_path: Path) -> AsyncIterator[tuple[Harness, SQLiteStore, SlowBackend, Fleet]]:
    fleet = legacy_fleet(tmp_path / "state", "park")
    store = open_store(fleet)
    assert isinstance(store, SQLiteStore)
    backend = SlowBackend()
    harness = Harness(fleet, store, backend)
    yield harness, store, backend, fleet
    await harness.router.aclose()
    await store.close()


def request(run_id: str = "run_bank1", *, resume: bool = False) -> RunInput:
    return RunInput(
        run_id=run_id,
        agent=AGENT,
        input="Where is order 1004?",
        session_id="ses_bank",
        deadline_ts=time.time() + 30,
        resume=resume,
    )


async def test_a_pending_tool_call_parks_the_run_as_waiting(
    parking: tuple[Harness, SQLiteStore, SlowBackend, Fleet],
) -> None:
    harness, store, backend, fleet = parking
    out = await harness.loop.run(request())
    assert out.status == "waiting"
    assert out.error is not None and out.error["status"] == 202
    assert out.error["type"].endswith("/tool-pending") and out.error["tool"] == "lookup_order_async"
    assert out.error["correlation_id"] == f"cid-{backend.calls[0]}"
    assert [s["kind"] for s in out.steps] == ["model", "tool"]
    assert out.steps[1]["pending"] is True and out.steps[1]["is_error"] is False
    record = await store.get_run("run_bank1")
    assert record is not None and record.status == "waiting"
    lot = ParkingLot.for_fleet(fleet)
    assert lot is not None and await lot.is_parked("run_bank1")
    # The session has no half turn: the run's messages join it only when it completes.
    session = await store.get_session("ses_bank")
    assert session is None or session.messages == []


async def test_a_repeated_start_does_not_run_the_waiting_run_again(
    parking: tuple[Harness, SQLiteStore, SlowBackend, Fleet],
) -> None:
    harness, store, backend, _ = parking
    await harness.loop.run(request())
    with pytest.raises(ConflictError):  # only a resume (resume=True) continues a parked run
        await harness.loop.run(request())
    assert len(backend.calls) == 1
    record = await store.get_run("run_bank1")
    assert record is not None and record.status == "waiting"


async def test_the_reply_resumes_the_run_once_with_the_same_call_id(
    parking: tuple[Harness, SQLiteStore, SlowBackend, Fleet],
) -> None:
    harness, store, backend, fleet = parking
    parked = await harness.loop.run(request())
    assert parked.status == "waiting"
    # Still no reply: a resume parks the run again, with the same progress.
    assert (await harness.resumer.resume("run_bank1")) is not None
    assert (await store.get_run("run_bank1")).status == "waiting"  # type: ignore[union-attr]
    backend.replied = True
    out = await harness.resumer.resume("run_bank1")
    assert out is not None and out.status == "completed", out
    assert out.output == "Order 1004 (desk lamp) is delivered; balance due 0 USD. Signed for."
    assert len(set(backend.calls)) == 1 and len(backend.calls) == 3  # one call id, asked three times
    assert [s["kind"] for s in out.steps] == ["model", "tool", "model"]
    assert out.steps[1]["is_error"] is False and "pending" not in out.steps[1]
    session = await store.get_session("ses_bank")
    assert session is not None and [m["role"] for m in session.messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    # Exactly once: the parked progress was claimed; a second resume finds nothing to continue.
    lot = ParkingLot.for_fleet(fleet)
    assert lot is not None and not await lot.is_parked("run_bank1")
    assert await harness.resumer.resume("run_bank1") is None
    assert len(backend.calls) == 3


async def test_a_delegated_run_resumes_through_its_root() -> None:
    assert root_run_id("run_ABC-s2-c0") == "run_ABC"
    assert root_run_id("run_ABC") == "run_ABC"


def test_parking_is_on_for_fleets_with_parking_tools_only(tmp_path: Path) -> None:
    parks = legacy_fleet(tmp_path / "a", "park")
    waits = legacy_fleet(tmp_path / "b", "wait")
    assert has_parkable_tools(parks) and not has_parkable_tools(waits)
    assert ParkingLot.for_fleet(parks) is not None
    assert ParkingLot.for_fleet(waits) is None  # the example has no governance sections either


async def test_a_stateful_agent_parks_in_its_journal_and_resumes_after_a_restart(tmp_path: Path) -> None:
    from raygent.actors.stateful import LocalStatefulAgent

    fleet = legacy_fleet(tmp_path / "state", "park")
    agents = dict(fleet.agents)
    agents[AGENT] = agents[AGENT].model_copy(update={"stateful": True})
    fleet = fleet.model_copy(update={"agents": agents})
    store = open_store(fleet)
    assert isinstance(store, SQLiteStore)
    clock, tracer = SystemClock(), TracerProvider().get_tracer("test")
    router = Router.from_fleet(fleet, clock=clock)
    backend = SlowBackend()
    model = build_model_chain(router, store=store, tracer=tracer, clock=clock)
    agent = LocalStatefulAgent(
        fleet, AGENT, store=store, model=model, tools=backend, tracer=tracer, clock=clock
    )

    class Invoker:
        async def invoke(self, run: RunInput) -> RunOutput:
            return await agent.run(run)

    resumer = ReplyResumer({}, store=store, invoker=Invoker(), clock=clock, deadlines_s={AGENT: 30.0})
    try:
        parked = await agent.run(request("run_st1"))
        assert parked.status == "waiting", parked.error
        agent.release()  # the process goes away; the session comes back from its checkpoint
        backend.replied = True
        out = await resumer.resume("run_st1")
        assert out is not None and out.status == "completed", out
        assert out.output == "Order 1004 (desk lamp) is delivered; balance due 0 USD. Signed for."
        assert len(set(backend.calls)) == 1 and len(backend.calls) == 2
        assert await resumer.resume("run_st1") is None  # once
        history = agent.host("ses_bank")
        runtime = await history.ensure()
        assert [m["role"] for m in runtime.history()] == ["user", "assistant", "tool", "assistant"]
    finally:
        await router.aclose()
        await store.close()
