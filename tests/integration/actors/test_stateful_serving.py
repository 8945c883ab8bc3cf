"""Stateful and stateless agents served by Ray with the Redis store (no faults planned for these runs).

- A stateless agent on two replicas: any replica serves any turn of a session, because the context
  round-trips through Redis.
- A stateful agent's session actor releases itself when idle and comes back from its checkpoint.
- A streamed run of a stateful agent sends the session actor's steps and deltas; an actor killed
  mid-stream is sent the run again and the stream ends with the resumed run; actors that keep dying end
  the stream with the retryable ``session-actor-died`` error, not a hang.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from chaos_desk import ChaosDesk

from raygent.actors.errors import SessionActorDiedError
from raygent.actors.session_actor import NAMESPACE, SessionDirectory, session_actor_name
from raygent.core.faults import plan_for
from raygent.core.runs import RunEvent, RunInput, RunOutput
from raygent.core.store import open_store
from raygent.core.store.base import AuditQuery

pytestmark = pytest.mark.integration

_counter = itertools.count()


def calm_id(desk: ChaosDesk, prefix: str) -> str:
    """A run id the fault plan leaves alone."""
    assert desk.fleet.faults is not None
    while True:
        run_id = f"{prefix}_{next(_counter):05d}"
        if plan_for(desk.fleet.faults, run_id) is None:
            return run_id


def turn(desk: ChaosDesk, agent: str, text: str, session: str) -> RunInput:
    return RunInput(
        run_id=calm_id(desk, agent),
        agent=agent,
        input=text,
        session_id=session,
        deadline_ts=time.time() + 120,
    )


async def test_stateless_agent_any_replica_serves_any_session(chaos_desk: ChaosDesk) -> None:
    handle = chaos_desk.handle("front")
    replicas = []
    for n in range(16):
        served = await handle.run_served.remote(turn(chaos_desk, "front", f"remember fact {n}", "shared-1"))
        assert served.output.status == "completed", served.output.error
        replicas.append(served.replica)
    assert len(set(replicas)) == 2, "both replicas served turns of the one session"
    store = open_store(chaos_desk.fleet)
    session = await store.get_session("shared-1")
    assert session is not None and session.version == 16
    assert [m["content"] for m in session.messages if m["role"] == "user"][-3:] == [
        "remember fact 13",
        "remember fact 14",
        "remember fact 15",
    ]
    prompts = await store.query_audit(AuditQuery(kind="prompt", agent="front", limit=100))
    # One entry per run: a model step retried under load (a slow cold start) audits its prompt again,
    # with the same history, and must not count as another turn.
    seen = {p.run_id: p.payload["history_messages"] for p in prompts if p.session_id == "shared-1"}
    # Each turn saw every earlier turn, whichever replica served it (capped by max_history_messages).
    assert list(seen.values()) == [min(2 * n, 40) for n in range(16)]
    await store.close()


async def test_idle_session_actor_is_released_and_restored(chaos_desk: ChaosDesk) -> None:
    import ray

    handle = chaos_desk.handle("brief")
    first = await handle.run.remote(turn(chaos_desk, "brief", "remember the blue door", "idle-1"))
    assert first.status == "completed"
    name = session_actor_name(chaos_desk.app_name, "brief", "idle-1")
    # idle_release_s is 1.5 for "brief": the actor (its state already checkpointed) goes away by itself.
    for _ in range(240):
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            break
        await asyncio.sleep(0.25)
    else:
        pytest.fail("the idle session actor was not released")
    # The next request brings the session back: a new actor, restored from the checkpoint.
    second = await handle.run.remote(turn(chaos_desk, "brief", "what did I say", "idle-1"))
    assert second.status == "completed"
    store = open_store(chaos_desk.fleet)
    prompts = await store.query_audit(AuditQuery(kind="prompt", agent="brief", limit=100))
    assert [p.payload["history_messages"] for p in prompts if p.session_id == "idle-1"] == [0, 2]
    await store.close()


async def stream(desk: ChaosDesk, req: RunInput) -> list[RunEvent]:
    """The events of a streamed run, through the agent's deployment as the ingress calls it."""
    gen = desk.handle(req.agent).options(stream=True).run_events.remote(req)
    return [event async for event in gen]


def refund_steps() -> list[tuple[str, str | None]]:
    return [
        ("model", None),
        ("tool", "lookup_order"),
        ("model", None),
        ("tool", "issue_refund"),
        ("model", None),
        ("tool", "notify_customer"),
        ("model", None),
    ]


async def test_streamed_stateful_run_sends_the_session_actors_steps_and_deltas(chaos_desk: ChaosDesk) -> None:
    req = turn(chaos_desk, "desk", "please refund order 4321", "stream-1")
    events = await stream(chaos_desk, req)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("done") == 1
    out: RunOutput = events[-1].data
    assert out.status == "completed", out.error
    steps = [e.data for e in events if e.kind == "step"]
    assert steps == out.steps
    assert [(s["kind"], s.get("tool")) for s in steps] == refund_steps()
    last_tool = max(i for i, e in enumerate(events) if e.kind == "step" and e.data["kind"] == "tool")
    assert "".join(e.data["text"] for e in events[last_tool:] if e.kind == "delta") == out.output
    assert chaos_desk.effects()["refunds"][req.run_id] == 1


def actor_kill_run(desk: ChaosDesk) -> str:
    """A run id whose planned SIGKILL hits the session actor (not the gateway) during a tool step."""
    assert desk.fleet.faults is not None
    for n in range(10_000):
        run_id = f"desk_killed_{n:05d}"
        plan = plan_for(desk.fleet.faults, run_id)
        if plan is not None and plan[0] in {"after_model", "after_tool", "after_checkpoint"} and plan[1] <= 3:
            return run_id
    raise AssertionError("no run id with a planned session actor kill")


async def test_session_actor_killed_mid_stream_resumes_and_the_stream_ends_with_the_run(
    chaos_desk: ChaosDesk,
) -> None:
    run_id = actor_kill_run(chaos_desk)
    req = RunInput(
        run_id=run_id,
        agent="desk",
        input="please refund order 5551",
        session_id="stream-killed",
        deadline_ts=time.time() + 120,
    )
    kills_before = len(chaos_desk.kills())
    events = await stream(chaos_desk, req)
    assert len(chaos_desk.kills()) == kills_before + 1  # the planned SIGKILL fired, mid-stream
    assert events[-1].kind == "done" and [e.kind for e in events].count("done") == 1
    out: RunOutput = events[-1].data
    # The actor died, not the gateway: no effect is in doubt, so the resumed run completes.
    assert out.status == "completed", out.error
    assert [(s["kind"], s.get("tool")) for s in out.steps] == refund_steps()
    # Steps streamed before the kill and by the resumed run (one the checkpoint had not kept runs, and
    # streams, again); an event on its way out when the process died may be lost with it.
    streamed = {(e.data["step"], e.data["kind"]) for e in events if e.kind == "step"}
    assert (4, "model") in streamed and streamed <= {(s["step"], s["kind"]) for s in out.steps}
    effects = chaos_desk.effects()
    assert effects["refunds"][run_id] == 1 and effects["notifications"][run_id] == 1
    store = open_store(chaos_desk.fleet)
    record = await store.get_run(run_id)
    assert record is not None and record.status == out.status
    await store.close()


class DiesMidStream:
    """Stands in for the session actor: streams one event of a run, then its process dies."""

    def __init__(self, *_: Any) -> None:
        pass

    async def run_events(self, req: RunInput) -> AsyncIterator[RunEvent]:
        yield RunEvent("step", {"step": 1, "kind": "model", "run_id": req.run_id})
        await asyncio.sleep(0.05)
        os._exit(1)


async def test_stream_of_a_session_whose_actors_keep_dying_ends_with_session_actor_died(
    chaos_desk: ChaosDesk,
) -> None:
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    directory = SessionDirectory(
        chaos_desk.fleet, "desk", None, None, app_name="stream-death-test", actor=DiesMidStream
    )
    req = turn(chaos_desk, "desk", "please refund order 1", "doomed-1")
    seen: list[RunEvent] = []
    try:
        with pytest.raises(SessionActorDiedError) as raised:
            async for event in directory.run_events(req):
                seen.append(event)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.kill(directory.handle("doomed-1"), no_restart=True)
    assert raised.value.retryable
    problem = raised.value.to_problem(instance=f"/v1/runs/{req.run_id}")
    assert problem["type"].endswith("/session-actor-died") and problem["run_id"] == req.run_id
    assert seen and all(e.kind == "step" for e in seen)  # each incarnation's event, then the error
