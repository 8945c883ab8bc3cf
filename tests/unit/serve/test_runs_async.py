"""Async runs survive their dispatcher: abandoned ledger entries are taken over by another one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from serving_helpers import SECRET, Receiver, tiny_fleet

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.runs import RunInput
from raygent.core.store import SQLiteStore
from raygent.core.store.asyncruns import AsyncRunEntry
from raygent.core.store.base import RunRecord
from raygent.serve.agents import LocalAgentPort
from raygent.serve.callbacks import CallbackSender, verify_signature
from raygent.serve.serving import Serving, build_serving


@asynccontextmanager
async def dispatcher(
    fleet: Fleet, tracer_provider: TracerProvider
) -> AsyncIterator[tuple[Serving, SQLiteStore, LocalAgentPort]]:
    clock = SystemClock()
    store = SQLiteStore(fleet.state_path("raygent.db"))
    port = LocalAgentPort(fleet, store=store, tracer=tracer_provider.get_tracer("t"), clock=clock)
    sender = CallbackSender(fleet.server.callbacks, clock=clock, environ={"RAYGENT_CALLBACK_SECRET": SECRET})
    serving = build_serving(
        fleet, store=store, agents=port, clock=clock, tracer=tracer_provider.get_tracer("t"), sender=sender
    )
    try:
        yield serving, store, port
    finally:
        await serving.aclose()
        await port.aclose()
        await store.close()


def abandoned(
    run_id: str, *, state: str = "queued", deadline_in_s: float = 30, url: str | None = None
) -> AsyncRunEntry:
    now = time.time()
    return AsyncRunEntry(
        run_id=run_id,
        agent="a",
        session_id="ses-1",
        input="hi",
        priority="batch",
        accepted_at=now - 60,
        deadline_ts=now + deadline_in_s,
        callback_url=url,
        state=state,  # type: ignore[arg-type]
        owner="ingress_dead",
        lease_until=now - 1,  # its dispatcher stopped renewing
    )


async def settle(serving: Serving, run_id: str) -> AsyncRunEntry:
    for _ in range(400):
        entry = await serving.async_ledger.get(run_id)
        if entry is not None and not entry.open:
            return entry
        await asyncio.sleep(0.025)
    raise AssertionError(f"{run_id} never settled")


async def test_a_run_that_never_started_is_dispatched_by_the_next_sweeper(
    tmp_path: Path, tracer_provider: TracerProvider, receiver: Receiver
) -> None:
    fleet = tiny_fleet(tmp_path)
    async with dispatcher(fleet, tracer_provider) as (serving, store, _):
        await serving.async_ledger.add(abandoned("run_lost1", url=receiver.url))
        await serving.runner.sweep()
        entry = await settle(serving, "run_lost1")
        record = await store.get_run("run_lost1")
    assert record is not None and record.status == "completed"
    assert entry.owner == serving.runner.owner and entry.delivery == "delivered"
    headers, body = receiver.requests[-1]
    assert verify_signature(SECRET.encode(), headers, body, now=time.time())


async def test_a_run_the_agent_finished_is_reported_not_rerun(
    tmp_path: Path, tracer_provider: TracerProvider, receiver: Receiver
) -> None:
    fleet = tiny_fleet(tmp_path)
    async with dispatcher(fleet, tracer_provider) as (serving, store, port):
        # The old dispatcher reached the agent, which finished, then the dispatcher died.
        await port.run(
            RunInput(run_id="run_done1", agent="a", input="hi", session_id="s", deadline_ts=time.time() + 30)
        )
        await serving.async_ledger.add(abandoned("run_done1", state="dispatched", url=receiver.url))
        await serving.runner.sweep()
        entry = await settle(serving, "run_done1")
        runs = await store.list_runs()
    assert [r.run_id for r in runs] == ["run_done1"]  # executed once
    assert entry.outcome is not None and entry.outcome["status"] == "completed"
    assert entry.delivery == "delivered" and len(receiver.requests) == 1


async def test_a_run_whose_agent_vanished_is_failed_after_its_deadline(
    tmp_path: Path, tracer_provider: TracerProvider
) -> None:
    fleet = tiny_fleet(tmp_path)
    async with dispatcher(fleet, tracer_provider) as (serving, store, _):
        now = time.time()
        await store.create_run(
            RunRecord(
                run_id="run_gone1",
                agent="a",
                session_id="s",
                status="running",
                input="hi",
                created_at=now - 60,
                updated_at=now - 60,
            )
        )
        await serving.async_ledger.add(abandoned("run_gone1", state="dispatched", deadline_in_s=-30))
        await serving.runner.sweep()
        entry = await settle(serving, "run_gone1")
        record = await store.get_run("run_gone1")
    assert record is not None and record.status == "failed"
    assert record.error is not None and record.error["type"].endswith("run-lost")
    assert entry.outcome is not None and entry.outcome["status"] == "failed"


async def test_two_sweepers_never_both_take_an_entry(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = tiny_fleet(tmp_path)
    async with (
        dispatcher(fleet, tracer_provider) as (one, store, _),
        dispatcher(fleet, tracer_provider) as (two, _s, _p),
    ):
        for i in range(20):
            await one.async_ledger.add(abandoned(f"run_{i:02d}"))
        await asyncio.gather(one.runner.sweep(), two.runner.sweep())
        entries = [await settle(one, f"run_{i:02d}") for i in range(20)]
        runs = await store.list_runs(limit=100)
    assert len(runs) == 20 and all(r.status == "completed" for r in runs)
    assert {e.owner for e in entries} <= {one.runner.owner, two.runner.owner}
