"""Chaos on real Ray and real Redis: SIGKILL session actors and gateway replicas at seeded points of
multi-step refund runs, and restart Redis while runs are in flight.

Every run must come back completed, or parked as ``needs_approval`` (a non-idempotent notification
whose outcome a kill made unknown) with its progress still checkpointed; no refund or notification may
happen twice. ``scripts/chaos.py`` runs the same check for 1000+ runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from chaos_desk import CHAOS_SEED, ChaosDesk

from raygent.actors.stateful import checkpoint_key
from raygent.core.errors import RaygentError
from raygent.core.faults import plan_for
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store import RedisStore, open_store

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

CI_RUNS = 100
SESSIONS = 6


def request(run_id: str, order: int, session: str, agent: str = "desk") -> RunInput:
    return RunInput(
        run_id=run_id,
        agent=agent,
        input=f"please refund order {order}",
        session_id=session,
        deadline_ts=time.time() + 300,
    )


async def _session_runs(desk: ChaosDesk, session: str, runs: list[tuple[str, int]]) -> dict[str, Any]:
    handle = desk.handle("desk")
    results: dict[str, Any] = {}
    for run_id, order in runs:
        try:
            results[run_id] = await handle.run.remote(request(run_id, order, session))
        except Exception as exc:  # recorded, and counted as lost by the assertions
            results[run_id] = exc
    return results


async def check_runs(desk: ChaosDesk, results: dict[str, Any]) -> Counter[str]:
    """The invariants of a chaos run; returns the count of each final status."""
    store = open_store(desk.fleet)
    assert isinstance(store, RedisStore)
    lost = {r: v for r, v in results.items() if not isinstance(v, RunOutput)}
    assert not lost, f"runs that did not come back: {lost}"
    statuses: Counter[str] = Counter()
    effects = desk.effects()
    assert max(effects["refunds"].values(), default=0) <= 1, "a refund was applied twice"
    assert max(effects["notifications"].values(), default=0) <= 1, "a notification was sent twice"
    for run_id, out in results.items():
        statuses[out.status] += 1
        record = await store.get_run(run_id)
        assert record is not None and record.status == out.status, run_id
        refundable = int(record.input.rsplit(" ", 1)[1]) % 10 != 0
        if out.status == "completed":
            assert effects["refunds"][run_id] == int(refundable), run_id
            assert effects["notifications"][run_id] == int(refundable), run_id
        else:
            # Only an in-doubt notification parks a run: a kill of the shared gateway (planned for this
            # run or for another one in flight at the time) between its intent and its record.
            assert out.status == "needs_approval", (run_id, out.error)
            assert out.error is not None and out.error["tool"] == "notify_customer"
            effect = await store.get_effect(f"{run_id}:s3:c0")
            assert effect is not None and effect.status == "needs_approval", effect
            assert refundable and effects["refunds"][run_id] == 1
            assert effects["notifications"][run_id] <= 1
            # Parked, not lost: the run's progress is still in its session's checkpoint.
            checkpoint = await store.get_checkpoint(checkpoint_key("desk", record.session_id))
            assert checkpoint is not None and run_id.encode() in checkpoint.base + b"".join(checkpoint.deltas)
    assert (await store.verify_audit()).ok
    await store.close()
    return statuses


async def test_sigkill_at_seeded_points_loses_no_run_and_repeats_no_effect(chaos_desk: ChaosDesk) -> None:
    spec = chaos_desk.fleet.faults
    assert spec is not None and spec.seed == CHAOS_SEED
    runs = [(f"chaos_{n:04d}", 1 + (n * 7919) % 9999) for n in range(CI_RUNS)]
    per_session = [runs[i::SESSIONS] for i in range(SESSIONS)]
    gathered = await asyncio.gather(
        *(_session_runs(chaos_desk, f"chaos-{i}", chunk) for i, chunk in enumerate(per_session))
    )
    results = {k: v for part in gathered for k, v in part.items()}
    assert len(results) == CI_RUNS
    statuses = await check_runs(chaos_desk, results)
    assert statuses["completed"] > CI_RUNS // 2
    planned = [plan_for(spec, r) for r, _ in runs]
    fired = chaos_desk.kills()
    # Kills really happened, in both processes (a plan for a step a run never reaches does not fire).
    assert len(fired) >= 15, fired
    assert any(".after_effect." in f or ".after_intent." in f for f in fired)
    assert any(".after_tool." in f for f in fired) and any(".after_model." in f for f in fired)
    assert sum(p is not None for p in planned) >= len(fired)


async def test_redis_restart_mid_run_fails_clearly_or_resumes(chaos_desk: ChaosDesk) -> None:
    handle = chaos_desk.handle("desk")
    # Run ids without a planned kill: this test is about Redis, not about SIGKILLs.
    ids = [
        f"redis_{n:04d}" for n in range(400) if plan_for(chaos_desk.fleet.faults, f"redis_{n:04d}") is None
    ]  # type: ignore[arg-type]
    runs = {run_id: request(run_id, 1 + n, f"redis-{n % 3}") for n, run_id in enumerate(ids[:24])}
    errors: list[BaseException] = []

    async def drive(req: RunInput) -> RunOutput:
        for _ in range(8):
            try:
                out: RunOutput = await handle.run.remote(req)
                return out
            except RaygentError as exc:  # the clear error; the same request then resumes the run
                errors.append(exc)
                await asyncio.sleep(0.5)
        raise AssertionError(f"run {req.run_id} never finished: {errors[-1:]}")

    async def restart_redis() -> None:
        for delay in (0.3, 1.0):
            await asyncio.sleep(delay)
            chaos_desk.redis.stop(kill=True)
            await asyncio.sleep(0.3)
            chaos_desk.redis.start()

    results, _ = await asyncio.gather(asyncio.gather(*(drive(req) for req in runs.values())), restart_redis())
    for exc in errors:
        assert "Redis" in str(exc) or "store" in str(exc).lower(), exc
    # A restart between a notification's effect and its record leaves that outcome unknown: the run parks
    # for a person (the same invariants as the kill test), every other run resumes and completes.
    statuses = await check_runs(chaos_desk, {o.run_id: o for o in results})
    assert statuses["completed"] >= len(runs) - 4, statuses
