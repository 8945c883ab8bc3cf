"""Admission: bounded in-flight runs per agent; batch is refused before interactive."""

from __future__ import annotations

import asyncio

import pytest

from raygent.core.config import AgentSpec
from raygent.core.errors import OverloadedError
from raygent.serve.admission import AdmissionController, AgentLimits


def spec(**fields: object) -> AgentSpec:
    return AgentSpec.model_validate({"identity": "svc", "prompt": "p@1", **fields})


def test_limits_follow_the_fleet_file() -> None:
    assert AgentLimits.of(spec(max_ongoing_requests=8, max_queued_requests=16, replicas=2)) == AgentLimits(
        32, 16
    )
    scaled = spec(
        max_ongoing_requests=4, max_queued_requests=10, autoscaling={"min_replicas": 1, "max_replicas": 5}
    )
    assert AgentLimits.of(scaled) == AgentLimits(capacity=30, batch_limit=4)
    assert AgentLimits.of(spec(batch_max_inflight=0)).batch_limit == 0
    assert (
        AgentLimits.of(spec(max_ongoing_requests=1, max_queued_requests=0, batch_max_inflight=99)).batch_limit
        == 1
    )


def test_each_ingress_replica_admits_its_share() -> None:
    agent = spec(max_ongoing_requests=8, max_queued_requests=17, replicas=2, batch_max_inflight=5)
    assert AgentLimits.of(agent) == AgentLimits(capacity=33, batch_limit=5)
    # Rounded up, so the replicas together admit at least what one would (never a limit of 0).
    assert AgentLimits.of(agent, 2) == AgentLimits(capacity=17, batch_limit=3)
    assert AgentLimits.of(agent, 100) == AgentLimits(capacity=1, batch_limit=1)
    control = AdmissionController.for_agents({"a": agent}, retry_after_s=1, shares=2)
    tickets = [control.try_admit("a", "interactive") for _ in range(17)]
    with pytest.raises(OverloadedError):
        control.try_admit("a", "interactive")
    for ticket in tickets:
        ticket.release()


def test_batch_is_shed_first_and_slots_come_back() -> None:
    control = AdmissionController({"a": AgentLimits(capacity=3, batch_limit=1)}, retry_after_s=2)
    first = control.try_admit("a", "batch")
    with pytest.raises(OverloadedError) as refused:
        control.try_admit("a", "batch")
    assert refused.value.retry_after_s == 2 and refused.value.status == 503
    second, third = control.try_admit("a", "interactive"), control.try_admit("a", "interactive")
    with pytest.raises(OverloadedError):
        control.try_admit("a", "interactive")
    first.release()
    first.release()  # idempotent
    with control.try_admit("a", "interactive"):
        pass
    second.release()
    third.release()
    stats = control.stats()["a"]
    assert stats["inflight"] == {"interactive": 0, "batch": 0}
    assert stats["high_water"] == 3 and stats["shed"] == {"interactive": 1, "batch": 1}
    assert stats["admitted"] == {"interactive": 3, "batch": 1}


async def test_admit_wait_takes_the_next_free_slot_or_times_out() -> None:
    control = AdmissionController({"a": AgentLimits(capacity=1, batch_limit=1)}, retry_after_s=1)
    held = control.try_admit("a", "interactive")
    waiter = asyncio.create_task(control.admit_wait("a", "batch", timeout_s=5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    held.release()
    ticket = await asyncio.wait_for(waiter, 5)
    assert ticket.priority == "batch"
    with pytest.raises(TimeoutError):
        await control.admit_wait("a", "interactive", timeout_s=0.05)
    ticket.release()
    assert control.has_room("a", "interactive")


def test_a_run_that_cannot_be_answered_within_its_budget_is_refused_at_once() -> None:
    now = [100.0]
    control = AdmissionController(
        {"a": AgentLimits(capacity=100, batch_limit=100)}, retry_after_s=1, monotonic=lambda: now[0]
    )
    assert control.expected_wait_s("a") is None  # no history: admit
    for _ in range(20):  # 20 answers in the last 5 s: 4 per second
        now[0] += 0.25
        control.try_admit("a", "interactive").release()
    assert control.expected_wait_s("a") == 1 / 4
    held = [control.try_admit("a", "interactive") for _ in range(7)]  # 7 ahead: the 8th waits ~2 s
    assert control.expected_wait_s("a") == 8 / 4
    control.try_admit("a", "interactive", budget_s=2.5).release()
    with pytest.raises(OverloadedError) as late:
        control.try_admit("a", "interactive", budget_s=1.5)
    assert late.value.extra["expected_wait_s"] == pytest.approx(8 / (21 / 5), abs=1e-3)  # one more answer
    with control.try_admit("a", "interactive"):  # no budget given: only the bound applies
        pass
    stats = control.stats()["a"]
    assert stats["shed_past_budget"] == 1 and stats["shed"]["interactive"] == 1
    for ticket in held:
        ticket.release()
    now[0] += 60  # the history ages out
    assert control.expected_wait_s("a") is None
