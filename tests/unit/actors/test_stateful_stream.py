"""Streamed runs of a stateful agent in process: the same events as a stateless agent's stream, from the
same checkpointed run; a stream closed early cancels the run and leaves the session clean and usable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from refund_desk import SimulatedCrash, crash, ledger, refund_fleet, run_input

from raygent.actors.inprocess import InProcessFleet
from raygent.actors.stateful import checkpoint_key
from raygent.core.clock import SystemClock
from raygent.core.config import FaultSpec, Fleet
from raygent.core.faults import FaultHook
from raygent.core.runs import RunEvent, RunOutput
from raygent.core.store import SQLiteStore, open_store
from raygent.core.store.durable import CheckpointWrite


class HoldingStore(SQLiteStore):
    """Holds the checkpoint write of one version after it is stored, before it returns: the moment a
    reply is on its way back, when a cancellation can cut the writer short."""

    def __init__(self, path: Path, *, hold_version: int) -> None:
        super().__init__(path)
        self.hold_version = hold_version
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def put_checkpoints(self, writes: list[CheckpointWrite]) -> None:
        await super().put_checkpoints(writes)
        if any(w.version == self.hold_version for w in writes) and not self.held.is_set():
            self.held.set()
            await self.release.wait()


class CrashOnce(FaultHook):
    """An in-process "SIGKILL" once, at one point and step of any run."""

    def __init__(self, point: str, step: int, marker_dir: Path) -> None:
        super().__init__(FaultSpec(seed=0, kill_ratio=0.0, points=["after_model"]), marker_dir, kill=crash)
        self._target: tuple[str, int] | None = (point, step)

    def at(self, point: str, *, run_id: str, step: int) -> None:
        if (point, step) == self._target:
            self._target = None
            crash()


def _inproc(fleet: Fleet, store: SQLiteStore, faults: FaultHook | None = None) -> InProcessFleet:
    tracer = TracerProvider().get_tracer("t")
    return InProcessFleet(fleet, store=store, tracer=tracer, clock=SystemClock(), faults=faults)


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[tuple[InProcessFleet, SQLiteStore, Fleet]]:
    fleet = refund_fleet(tmp_path / "state")
    store = open_store(fleet)
    assert isinstance(store, SQLiteStore)
    inproc = _inproc(fleet, store)
    yield inproc, store, fleet
    await inproc.aclose()
    await store.close()


async def test_streamed_stateful_run_sends_every_step_and_the_deltas(
    desk: tuple[InProcessFleet, SQLiteStore, Fleet],
) -> None:
    inproc, store, fleet = desk
    events = [
        e async for e in inproc.stateful["desk"].run_events(run_input("refund order 1234", run_id="run_s"))
    ]
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    out: RunOutput = events[-1].data
    assert out.status == "completed", out.error
    assert out.output == "Refund rf_run_s_s2_c0 for order 1234 is issued and the customer was told."
    steps = [e.data for e in events if e.kind == "step"]
    assert steps == out.steps
    assert [(s["kind"], s.get("tool")) for s in steps] == [
        ("model", None),
        ("tool", "lookup_order"),
        ("model", None),
        ("tool", "issue_refund"),
        ("model", None),
        ("tool", "notify_customer"),
        ("model", None),
    ]
    # Token deltas as the model generates them: the answer's arrive after the last tool step.
    last_tool = max(i for i, e in enumerate(events) if e.kind == "step" and e.data["kind"] == "tool")
    answer = "".join(e.data["text"] for e in events[last_tool:] if e.kind == "delta")
    assert answer == out.output
    assert kinds.index("delta") < kinds.index("step")  # streamed before the step that made them is recorded
    # The same checkpointed run as an unstreamed one: a checkpoint per step boundary, nothing pending,
    # the refund applied once.
    stored = await store.get_checkpoint(checkpoint_key("desk", "cust-1"))
    assert stored is not None and stored.version == 3 * 2 + 1 + 1
    runtime = await inproc.stateful["desk"].host("cust-1").ensure()
    assert runtime.pending_runs() == []
    assert ledger(Path(fleet.state_dir))["refunds"] == [("run_s", "run_s:s2:c0", 74.0)]
    record = await store.get_run("run_s")
    assert record is not None and record.status == "completed" and record.steps == out.steps


async def test_closing_the_stream_cancels_the_run_and_the_session_stays_usable(
    desk: tuple[InProcessFleet, SQLiteStore, Fleet],
) -> None:
    inproc, store, fleet = desk
    agent = inproc.stateful["desk"]
    stream = agent.run_events(run_input("please refund order 1234", run_id="run_gone"))
    first_step: RunEvent | None = None
    async for event in stream:
        if event.kind == "step":
            first_step = event
            break
    await stream.aclose()  # the client went away after the first step
    assert first_step is not None and first_step.data["tool_calls"] == ["lookup_order"]
    record = await store.get_run("run_gone")
    assert record is not None and record.status == "cancelled"
    assert ledger(Path(fleet.state_dir))["refunds"] == []  # stopped before the refund step
    runtime = await agent.host("cust-1").ensure()
    assert runtime.pending_runs() == []  # settled: its progress left the session's state
    nxt = [e async for e in agent.run_events(run_input("remember the blue door", run_id="run_next"))]
    assert nxt[-1].kind == "done" and nxt[-1].data.status == "completed", nxt[-1].data.error
    assert [m["content"] for m in runtime.history()] == ["remember the blue door", "Noted: the blue door."]
    assert (await store.get_checkpoint(checkpoint_key("desk", "cust-1"))) is not None


async def test_a_run_cancelled_during_a_checkpoint_write_leaves_the_session_writable(tmp_path: Path) -> None:
    fleet = refund_fleet(tmp_path / "state")
    open_store(fleet)  # creates the state directory and the schema
    store = HoldingStore(fleet.state_path(fleet.store.path), hold_version=1)
    inproc = _inproc(fleet, store)
    agent = inproc.stateful["desk"]

    async def consume() -> list[RunEvent]:
        return [e async for e in agent.run_events(run_input("remember x", run_id="run_cut"))]

    consumer = asyncio.ensure_future(consume())
    await store.held.wait()  # version 1 is stored; its writer has not heard back yet
    consumer.cancel()
    store.release.set()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    record = await store.get_run("run_cut")
    assert record is not None and record.status == "cancelled"
    runtime = await agent.host("cust-1").ensure()
    assert runtime.pending_runs() == []
    # Memory and store agree on the version: the next run's checkpoints are not refused as conflicts.
    out = await inproc.invoke(run_input("remember y", run_id="run_after"))
    assert out.status == "completed", out.error
    stored = await store.get_checkpoint(checkpoint_key("desk", "cust-1"))
    assert stored is not None and stored.version == runtime.version
    await inproc.aclose()
    await store.close()


async def test_a_stream_sent_again_after_a_crash_streams_the_steps_left(tmp_path: Path) -> None:
    fleet = refund_fleet(tmp_path / "state")
    store = open_store(fleet)
    assert isinstance(store, SQLiteStore)
    # The refund (step 2) is done and recorded in the effect ledger; the step's checkpoint is not written.
    inproc = _inproc(fleet, store, CrashOnce("after_tool", 2, tmp_path / "markers"))
    req = run_input("refund order 1234", run_id="run_k")
    before: list[RunEvent] = []
    with pytest.raises(SimulatedCrash):
        async for event in inproc.stateful["desk"].run_events(req):
            before.append(event)
    assert [(e.data["step"], e.data["kind"]) for e in before if e.kind == "step"][-1] == (2, "tool")
    inproc.stateful["desk"].release()  # the process is gone: the next one restores the checkpoint
    after = [e async for e in inproc.stateful["desk"].run_events(req)]
    out: RunOutput = after[-1].data
    assert out.status == "completed", out.error
    # The resumed run streams what it runs: step 2's tool call again (answered from the ledger), then on.
    assert [(e.data["step"], e.data.get("tool")) for e in after if e.kind == "step"] == [
        (2, "issue_refund"),
        (3, None),
        (3, "notify_customer"),
        (4, None),
    ]
    assert ledger(Path(fleet.state_dir))["refunds"] == [("run_k", "run_k:s2:c0", 74.0)]
    await inproc.aclose()
    await store.close()
