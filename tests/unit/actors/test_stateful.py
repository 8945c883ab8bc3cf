"""Stateful agents in process: checkpoint after every step, restore after release, resume after a crash.

The "crashes" here raise :class:`SimulatedCrash` at the fault points a SIGKILL hits in the Ray chaos
tests (tests/integration/actors/test_chaos.py); after one, the session's live state is dropped, exactly
what a dead process loses, and the run is sent again.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from refund_desk import SimulatedCrash, crash, ledger, refund_fleet, run_input

from raygent.actors.checkpoint import Checkpointer, RunProgress
from raygent.actors.inprocess import InProcessFleet
from raygent.actors.stateful import checkpoint_key
from raygent.core.clock import SystemClock
from raygent.core.config import FAULT_POINTS, FaultSpec, Fleet
from raygent.core.errors import ConflictError
from raygent.core.faults import FaultHook, plan_for
from raygent.core.govconfig import SpendingLimitSpec, SpendingSpec
from raygent.core.runs import RunOutput
from raygent.core.store import SQLiteStore, open_store
from raygent.core.store.base import AuditQuery
from raygent.governance.errors import ApprovalClosedError
from raygent.governance.resume import RunResumer
from raygent.governance.runtime import Governance, governance_enabled
from raygent.governance.settle import settle_in_doubt


async def _fleet(fleet: Fleet, faults: FaultHook | None = None) -> tuple[InProcessFleet, SQLiteStore]:
    store = open_store(fleet)
    assert isinstance(store, SQLiteStore)
    inproc = InProcessFleet(
        fleet, store=store, tracer=TracerProvider().get_tracer("t"), clock=SystemClock(), faults=faults
    )
    return inproc, store


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[tuple[InProcessFleet, SQLiteStore, Fleet]]:
    fleet = refund_fleet(tmp_path / "state")
    inproc, store = await _fleet(fleet)
    yield inproc, store, fleet
    await inproc.aclose()
    await store.close()


async def test_stateful_run_checkpoints_every_step(desk: tuple[InProcessFleet, SQLiteStore, Fleet]) -> None:
    inproc, store, fleet = desk
    out = await inproc.invoke(run_input("please refund order 1234", run_id="run_a"))
    assert out.status == "completed", out.error
    assert out.output == "Refund rf_run_a_s2_c0 for order 1234 is issued and the customer was told."
    assert [s["kind"] for s in out.steps] == ["model", "tool", "model", "tool", "model", "tool", "model"]
    stored = await store.get_checkpoint(checkpoint_key("desk", "cust-1"))
    # Three tool steps (model answer + step done each), the final answer, and folding it into history.
    assert stored is not None and stored.version == 3 * 2 + 1 + 1
    host = inproc.stateful["desk"].host("cust-1")
    runtime = await host.ensure()
    assert runtime.pending_runs() == []
    assert [m["role"] for m in runtime.history()] == ["user", *["assistant", "tool"] * 3, "assistant"]
    assert ledger(Path(fleet.state_dir))["refunds"] == [("run_a", "run_a:s2:c0", 74.0)]


async def test_released_session_comes_back_from_its_checkpoint(
    desk: tuple[InProcessFleet, SQLiteStore, Fleet],
) -> None:
    inproc, store, _ = desk
    first = await inproc.invoke(run_input("remember my dog is called Rex", run_id="run_1"))
    assert first.output == "Noted: my dog is called Rex."
    inproc.stateful["desk"].release()  # idle release: live state gone, checkpoint kept
    second = await inproc.invoke(run_input("what did I say", run_id="run_2"))
    assert second.status == "completed"
    prompts = await store.query_audit(AuditQuery(kind="prompt", agent="desk"))
    assert [p.payload["history_messages"] for p in prompts] == [0, 2]
    runtime = await inproc.stateful["desk"].host("cust-1").ensure()
    assert [m["content"] for m in runtime.history() if m["role"] == "user"] == [
        "remember my dog is called Rex",
        "what did I say",
    ]
    # Stateful agents keep their conversation in the checkpoint, not in the sessions table.
    assert await store.get_session("cust-1") is None


async def test_sessions_are_separate(desk: tuple[InProcessFleet, SQLiteStore, Fleet]) -> None:
    inproc, _, _ = desk
    await inproc.invoke(run_input("remember A", run_id="r1", session="one"))
    await inproc.invoke(run_input("remember B", run_id="r2", session="two"))
    one = await inproc.stateful["desk"].host("one").ensure()
    two = await inproc.stateful["desk"].host("two").ensure()
    assert [m["content"] for m in one.history()] == ["remember A", "Noted: A."]
    assert [m["content"] for m in two.history()] == ["remember B", "Noted: B."]


async def test_retried_finished_run_returns_the_stored_result(
    desk: tuple[InProcessFleet, SQLiteStore, Fleet],
) -> None:
    inproc, store, fleet = desk
    first = await inproc.invoke(run_input("refund order 77", run_id="run_x"))
    calls = len(await store.query_audit(AuditQuery(kind="model_call")))
    again = await inproc.invoke(run_input("refund order 77", run_id="run_x"))
    assert again == first
    assert len(await store.query_audit(AuditQuery(kind="model_call"))) == calls
    assert len(ledger(Path(fleet.state_dir))["invocations"]) == 2  # refund + notify, once each


async def test_state_over_the_limit_fails_clearly_and_keeps_the_session(tmp_path: Path) -> None:
    fleet = refund_fleet(tmp_path / "state", max_state_bytes=1024)
    inproc, store = await _fleet(fleet)
    small = await inproc.invoke(run_input("remember x", run_id="r_small"))
    assert small.status == "completed"
    big = await inproc.invoke(run_input("remember " + "y" * 2000, run_id="r_big"))
    assert big.status == "failed"
    assert big.error is not None and big.error["status"] == 413
    assert big.error["type"].endswith("/state-too-large")
    assert "max_state_bytes is 1024" in big.error["detail"]
    runtime = await inproc.stateful["desk"].host("cust-1").ensure()
    assert [m["content"] for m in runtime.history()] == ["remember x", "Noted: x."]
    assert runtime.pending_runs() == []
    await inproc.aclose()
    await store.close()


async def test_large_state_is_checkpointed_as_deltas(tmp_path: Path) -> None:
    fleet = refund_fleet(tmp_path / "state", max_history_messages=1000)
    inproc, store = await _fleet(fleet)
    deltas_restored = 0
    written = []
    for n in range(12):
        out = await inproc.invoke(run_input(f"remember fact {n} " + "z" * 1500, run_id=f"r{n}"))
        assert out.status == "completed"
        runtime = await inproc.stateful["desk"].host("cust-1").ensure()
        assert runtime.last_stats is not None
        written.append(runtime.last_stats)
        stored = await store.get_checkpoint(checkpoint_key("desk", "cust-1"))
        assert stored is not None and stored.version == runtime.version
        if stored.deltas:
            # A fresh process restores exactly this state from the base and the deltas after it.
            fresh = Checkpointer(store, checkpoint_key("desk", "cust-1"), max_state_bytes=1 << 20)
            assert await fresh.load() == dict(runtime.state)
            deltas_restored += 1
    assert deltas_restored >= 3
    big = [w for w in written if w.state_bytes > 16_000]
    assert big and all(w.delta and w.written_bytes < w.state_bytes / 4 for w in big if w.delta)
    assert sum(w.delta for w in big) >= len(big) // 2
    inproc.stateful["desk"].release()
    restored = await inproc.stateful["desk"].host("cust-1").ensure()
    assert len(restored.history()) == 24
    await inproc.aclose()
    await store.close()


@pytest.mark.parametrize(
    ("point", "step"),
    [
        ("after_model", 1),
        ("after_checkpoint", 1),
        ("after_tool", 2),  # the refund happened and was recorded as done; the step's checkpoint did not
        ("after_effect", 2),  # the refund happened; its outcome was never recorded
        ("after_intent", 2),
        ("after_model", 4),  # the final answer, before it was checkpointed
        ("after_checkpoint", 4),
    ],
)
async def test_crash_then_resume_refunds_once(tmp_path: Path, point: str, step: int) -> None:
    spec = FaultSpec(seed=0, kill_ratio=1.0, points=[point], max_step=1)  # type: ignore[list-item]
    fleet = refund_fleet(tmp_path / "state", faults=spec)
    faults = _ForcedFaults(point, step, tmp_path / "markers")
    inproc, store = await _fleet(fleet, faults)
    req = run_input("refund order 1234", run_id="run_c")
    with pytest.raises(SimulatedCrash):
        await inproc.invoke(req)
    inproc.stateful["desk"].release()
    out = await inproc.invoke(req)
    assert out.status == "completed", out.error
    done = ledger(Path(fleet.state_dir))
    assert done["refunds"] == [("run_c", "run_c:s2:c0", 74.0)]
    assert done["notifications"] == [("run_c", "run_c:s3:c0")]
    record = await store.get_run("run_c")
    assert record is not None and record.status == "completed" and record.output == out.output
    assert (await store.verify_audit()).ok
    await inproc.aclose()
    await store.close()


async def test_crash_after_a_non_idempotent_effect_needs_a_person(tmp_path: Path) -> None:
    fleet = refund_fleet(tmp_path / "state")
    faults = _ForcedFaults("after_effect", 3, tmp_path / "markers")
    inproc, store = await _fleet(fleet, faults)
    req = run_input("refund order 1234", run_id="run_n")
    with pytest.raises(SimulatedCrash):
        await inproc.invoke(req)
    inproc.stateful["desk"].release()
    out = await inproc.invoke(req)
    assert out.status == "needs_approval"
    assert out.error is not None and out.error["type"].endswith("/effect-in-doubt")
    assert "not idempotent" in out.error["detail"] and out.error["idempotency_key"] == "run_n:s3:c0"
    effect = await store.get_effect("run_n:s3:c0")
    assert effect is not None and effect.status == "needs_approval" and effect.attempts == 1
    # The notification went out once (before the crash) and was not repeated.
    assert len(ledger(Path(fleet.state_dir))["notifications"]) == 1
    # The run is parked, resumable: its progress is still in the session's checkpoint.
    runtime = await inproc.stateful["desk"].host("cust-1").ensure()
    assert runtime.pending_runs() == ["run_n"]
    progress = await runtime.resume("run_n")
    assert isinstance(progress, RunProgress) and (progress.step, progress.phase) == (3, "model")
    record = await store.get_run("run_n")
    assert record is not None and record.status == "needs_approval"
    await inproc.aclose()
    await store.close()


def _governed(fleet: Fleet) -> Fleet:
    """The refund desk with a spending limit: a governed fleet, so it has approvals (and their API)."""
    limit = SpendingLimitSpec(tool="issue_refund", amount_arg="amount_usd", per_agent_per_day_usd=1000)
    governed = fleet.model_copy(update={"spending": SpendingSpec(limits=[limit])})
    assert governance_enabled(governed)
    return governed


async def _held_for_a_person(tmp_path: Path) -> tuple[InProcessFleet, SQLiteStore, Fleet, Governance, str]:
    """A governed run whose notification went out right before a crash: parked on a pending approval."""
    fleet = _governed(refund_fleet(tmp_path / "state"))
    inproc, store = await _fleet(fleet, _ForcedFaults("after_effect", 3, tmp_path / "markers"))
    req = run_input("refund order 1234", run_id="run_n")
    with pytest.raises(SimulatedCrash):
        await inproc.invoke(req)
    inproc.stateful["desk"].release()
    out = await inproc.invoke(req)
    assert out.status == "needs_approval" and out.error is not None
    assert out.error["type"].endswith("/effect-in-doubt") and out.error["idempotency_key"] == "run_n:s3:c0"
    gov = Governance.open(fleet, store=store, clock=SystemClock())
    [pending] = await gov.approvals.find_all(status="pending")
    assert out.error["approval_id"] == pending.approval_id
    assert out.error["approval_url"] == f"/v1/approvals/{pending.approval_id}"
    assert (pending.tool, pending.context["idempotency_key"], pending.root_run_id) == (
        "notify_customer",
        "run_n:s3:c0",
        "run_n",
    )
    record = await store.get_run("run_n")
    assert record is not None and record.status == "needs_approval"
    assert len(ledger(Path(fleet.state_dir))["notifications"]) == 1
    return inproc, store, fleet, gov, pending.approval_id


async def test_in_doubt_effect_approved_then_resumed_repeats_it_once(tmp_path: Path) -> None:
    inproc, store, fleet, gov, approval_id = await _held_for_a_person(tmp_path)
    approval = await gov.approvals.decide(approval_id, approver="ops", decision="approve", reason="not sent")
    resumer = RunResumer(gov, inproc)
    out = await resumer.resume(approval)
    assert out is not None and out.status == "completed", out
    assert out.output == "Refund rf_run_n_s2_c0 for order 1234 is issued and the customer was told."
    # Sent again once, with the idempotency key of the attempt whose outcome was unknown.
    assert ledger(Path(fleet.state_dir))["notifications"] == [("run_n", "run_n:s3:c0")] * 2
    effect = await store.get_effect("run_n:s3:c0")
    assert effect is not None and (effect.status, effect.attempts) == ("done", 2)
    assert await resumer.resume(approval) is None  # a second resume: the run is no longer parked
    assert await resumer.sweep() == 0
    again = await inproc.invoke(run_input("refund order 1234", run_id="run_n"))
    assert again.output == out.output
    assert len(ledger(Path(fleet.state_dir))["notifications"]) == 2
    assert (await store.get_run("run_n")).status == "completed"  # type: ignore[union-attr]
    await inproc.aclose()
    await store.close()


async def test_in_doubt_effect_denied_is_refused_and_never_repeated(tmp_path: Path) -> None:
    inproc, store, fleet, gov, approval_id = await _held_for_a_person(tmp_path)
    approval = await gov.approvals.decide(approval_id, approver="ops", decision="deny", reason="it was sent")
    out = await RunResumer(gov, inproc).resume(approval)
    # The model sees the refusal and tells the user; the run ends as its loop decides (here: completed).
    assert out is not None and out.status == "completed", out
    assert out.output is not None and out.output.startswith("The refund is issued, but I could not tell")
    assert "not repeated" in out.output
    assert len(ledger(Path(fleet.state_dir))["notifications"]) == 1
    effect = await store.get_effect("run_n:s3:c0")
    assert effect is not None and (effect.status, effect.attempts) == ("needs_approval", 1)
    refusals = await store.query_audit(AuditQuery(kind="policy_decision", run_id="run_n"))
    assert [(r.payload["stage"], r.payload["outcome"], r.payload["approval_id"]) for r in refusals] == [
        ("effects", "deny", approval_id)
    ]
    assert (await store.verify_audit()).ok
    await inproc.aclose()
    await store.close()


async def test_in_doubt_effect_settled_by_hand_goes_on_with_the_recorded_result(tmp_path: Path) -> None:
    inproc, store, fleet, gov, approval_id = await _held_for_a_person(tmp_path)
    seen = {"notified": True, "order_id": "1234", "refund_id": "rf_run_n_s2_c0"}  # what the CRM shows
    closed = await settle_in_doubt(gov, approval_id, approver="ops", result=seen, reason="in the CRM")
    assert closed.status == "denied" and "settled by hand" in closed.decisions[0]["reason"]
    assert gov.approvals.signatures_valid(closed)
    effect = await store.get_effect("run_n:s3:c0")
    assert effect is not None and (effect.status, effect.attempts) == ("done", 1)
    assert effect.outcome is not None and effect.outcome["settled_by"] == "ops"
    out = await RunResumer(gov, inproc).resume(closed)
    # The model goes on with the recorded result, as if the call had answered: no refusal, no repeat.
    assert out is not None and out.status == "completed", out
    assert out.output == "Refund rf_run_n_s2_c0 for order 1234 is issued and the customer was told."
    assert len(ledger(Path(fleet.state_dir))["notifications"]) == 1
    with pytest.raises(ApprovalClosedError):  # once
        await settle_in_doubt(gov, approval_id, approver="ops2", result=seen, reason="")
    await inproc.aclose()
    await store.close()


async def test_an_in_doubt_call_that_moved_on_is_not_settled_by_hand(tmp_path: Path) -> None:
    inproc, store, _fleet, gov, approval_id = await _held_for_a_person(tmp_path)
    await store.reopen_effect("run_n:s3:c0", now=1e12, expected_attempts=1)  # repeated meanwhile
    with pytest.raises(ConflictError):
        await settle_in_doubt(gov, approval_id, approver="ops", result={"notified": True}, reason="")
    effect = await store.get_effect("run_n:s3:c0")
    assert effect is not None and (effect.status, effect.attempts, effect.outcome) == ("intended", 2, None)
    assert (await gov.approvals.get(approval_id)).status == "pending"  # nothing decided either
    await inproc.aclose()
    await store.close()


class _ForcedFaults(FaultHook):
    """Crash once at exactly one (point, step), whatever the run."""

    def __init__(self, point: str, step: int, marker_dir: Path) -> None:
        spec = FaultSpec(seed=0, kill_ratio=0.0, points=["after_model"])
        super().__init__(spec, marker_dir, kill=crash)
        self._target = (point, step)
        self._fired = False

    def at(self, point: str, *, run_id: str, step: int) -> None:
        if (point, step) == self._target and not self._fired:
            self._fired = True
            crash()


async def test_seeded_crashes_lose_nothing_and_refund_once(tmp_path: Path) -> None:
    """100 seeded runs, about 60 % of them crashed once at a seeded point and step, then resumed."""
    spec = FaultSpec(seed=1234, kill_ratio=0.6, points=list(FAULT_POINTS), max_step=4)  # type: ignore[arg-type]
    fleet = refund_fleet(tmp_path / "state", faults=spec, max_history_messages=8)
    inproc, store = await _fleet(fleet, FaultHook(spec, tmp_path / "markers", kill=crash))
    rng = random.Random(1234)
    outputs: dict[str, RunOutput] = {}
    crashes = 0
    for n in range(100):
        run_id = f"run_{n:03d}"
        req = run_input(f"refund order {rng.randint(1, 9999)}", run_id=run_id, session=f"cust-{n % 7}")
        for _attempt in range(5):
            try:
                outputs[run_id] = await inproc.invoke(req)
                break
            except SimulatedCrash:
                crashes += 1
                inproc.stateful["desk"].release(req.session_id)
    assert len(outputs) == 100, "every run came back"
    planned = Counter(p[0] for r in outputs if (p := plan_for(spec, r)) is not None)
    assert crashes > 20 and len(planned) == len(FAULT_POINTS)
    statuses = Counter(o.status for o in outputs.values())
    assert set(statuses) <= {"completed", "needs_approval"}, statuses
    done = ledger(Path(fleet.state_dir))
    refunds = Counter(r[0] for r in done["refunds"])
    notes = Counter(n[0] for n in done["notifications"])
    assert max(refunds.values()) == 1 and max(notes.values()) == 1, "no effect applied twice"
    for run_id, out in outputs.items():
        record = await store.get_run(run_id)
        assert record is not None and record.status == out.status
        refundable = int(record.input.rsplit(" ", 1)[1]) % 10 != 0
        if out.status == "completed":
            assert refunds[run_id] == int(refundable) and notes[run_id] == int(refundable)
        else:  # only an in-doubt notification parks a run
            assert plan_for(spec, run_id) in {("after_effect", 3), ("after_intent", 3)}
            assert out.error is not None and out.error["tool"] == "notify_customer"
    assert (await store.verify_audit()).ok
    await inproc.aclose()
    await store.close()
