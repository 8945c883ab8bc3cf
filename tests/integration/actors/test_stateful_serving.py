"""Stateful and stateless agents served by Ray with the Redis store (no faults planned for these runs).

- A stateless agent on two replicas: any replica serves any turn of a session, because the context
  round-trips through Redis.
- A stateful agent's session actor releases itself when idle and comes back from its checkpoint.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from chaos_desk import ChaosDesk

from raygent.actors.session_actor import NAMESPACE, session_actor_name
from raygent.core.faults import plan_for
from raygent.core.runs import RunInput
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
