"""Streamed runs of a stateful agent on real Ray Serve over real HTTP: the session actor's steps and token
deltas reach a real SSE client, and a client that disconnects cancels the run inside the session actor,
which stays usable for the session's next run."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import httpx
import pytest
from load_fleet_helpers import LoadFleet, stream_sse, wait_for

from raygent.actors.checkpoint import Checkpointer
from raygent.actors.stateful import checkpoint_key
from raygent.core.store import open_store
from raygent.serve.sse import parse_events

pytestmark = pytest.mark.integration

RUNS = "/v1/agents/keeper/runs"
ANSWER = "one two three four five six seven eight nine ten"


def run_status(load: LoadFleet, run_id: str) -> str | None:
    with sqlite3.connect(load.fleet.state_path("raygent.db")) as conn:
        row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else str(row[0])


def session_state(load: LoadFleet, session_id: str) -> dict[str, Any] | None:
    async def load_state() -> dict[str, Any] | None:
        store = open_store(load.fleet)
        try:
            checkpointer = Checkpointer(store, checkpoint_key("keeper", session_id), max_state_bytes=1 << 20)
            return await checkpointer.load()
        finally:
            await store.close()

    return asyncio.run(load_state())


def test_sse_of_a_stateful_agent_streams_steps_and_deltas_to_a_real_client(load_fleet: LoadFleet) -> None:
    events = stream_sse(
        load_fleet.base_url, RUNS, {"input": "hi", "mode": "stream", "session_id": "sse-keeper-1"}
    )
    names = [name for name, _ in events]
    assert names[0] == "run" and names[-1] == "done", names
    final = events[-1][1]
    assert final["status"] == "completed", final["error"]
    assert final["replica"] == events[0][1]["replica"]
    assert [data for name, data in events if name == "step"] == final["steps"]
    assert [s["kind"] for s in final["steps"]] == ["model"]
    assert "".join(d["text"] for n, d in events if n == "delta") == final["output"] == ANSWER
    assert names.count("delta") == 5  # ten words in chunks of two, as the session actor streamed them
    state = session_state(load_fleet, "sse-keeper-1")
    assert state is not None and state["runs"] == {}
    assert [m["content"] for m in state["messages"]] == ["hi", ANSWER]


def test_client_that_disconnects_cancels_the_run_in_the_session_actor(load_fleet: LoadFleet) -> None:
    session = "sse-keeper-gone"
    body = {"input": "x", "mode": "stream", "session_id": session}
    with httpx.Client(base_url=load_fleet.base_url, timeout=60) as client:
        with client.stream("POST", RUNS, json=body) as resp:
            # Held: a dropped iterator closes the connection at once (httpcore closes it on GeneratorExit),
            # before the session actor has even started the run.
            chunks = resp.iter_text()
            first = next(chunks)
            run_id = parse_events(first)[0][1]["run_id"]
            # "running" is written by the step loop inside the session actor: the run has reached it.
            assert wait_for(lambda: run_status(load_fleet, run_id) == "running", 60, 0.02)
        # The connection is closed here, while the model call (1 s) is still running in the actor.
        # Only the actor's step loop records "cancelled": the cancellation reached it.
        cancelled = wait_for(lambda: run_status(load_fleet, run_id) == "cancelled", 30)
        assert cancelled, run_status(load_fleet, run_id)
        # The session is usable: its next run completes, and the cancelled turn left nothing behind.
        after = client.post(RUNS, json={"input": "again", "session_id": session})
    assert after.status_code == 200 and after.json()["status"] == "completed", after.json()
    state = session_state(load_fleet, session)
    assert state is not None and state["runs"] == {}
    assert [m["content"] for m in state["messages"]] == ["again", ANSWER]


def test_cancelling_the_directorys_stream_cancels_the_run_in_the_session_actor(load_fleet: LoadFleet) -> None:
    """Without Serve's own cancellation in between: the directory alone must stop the actor's run."""
    from ray import serve

    from raygent.actors.session_actor import SessionDirectory
    from raygent.core.runs import RunInput

    router = serve.get_deployment_handle("router", app_name=load_fleet.app_name)
    gateway = serve.get_deployment_handle("gateway", app_name=load_fleet.app_name)
    directory = SessionDirectory(load_fleet.fleet, "keeper", router, gateway, app_name=load_fleet.app_name)
    run_id = f"run_direct_{time.time_ns()}"
    req = RunInput(run_id, "keeper", "x", "direct-keeper", deadline_ts=time.time() + 120)

    async def go() -> None:
        consumer = asyncio.ensure_future(_drain(directory.run_events(req)))
        while run_status(load_fleet, run_id) != "running":  # the model call (1 s) is running in the actor
            assert not consumer.done(), consumer.result()
            await asyncio.sleep(0.02)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer

    asyncio.run(asyncio.wait_for(go(), 60))
    cancelled = wait_for(lambda: run_status(load_fleet, run_id) == "cancelled", 30)
    assert cancelled, run_status(load_fleet, run_id)
    nxt = RunInput(f"{run_id}_next", "keeper", "again", "direct-keeper", deadline_ts=time.time() + 120)
    out = asyncio.run(directory.run(nxt))
    assert out.status == "completed", out.error
    state = session_state(load_fleet, "direct-keeper")
    assert state is not None and state["runs"] == {}
    assert [m["content"] for m in state["messages"]] == ["again", ANSWER]


async def _drain(events: Any) -> None:
    async for _ in events:
        pass
