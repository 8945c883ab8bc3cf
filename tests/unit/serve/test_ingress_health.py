"""The ingress's health check (called by Serve every few seconds) starts the background sweepers, so a
restarted ingress acts on what it owes even before its first request: here, the approvals sweeper of a
governed fleet expires an overdue approval without any HTTP request reaching the replica."""

from __future__ import annotations

import asyncio
from pathlib import Path

from raygent.core.fleetfile import load_fleet
from raygent.core.interceptors import CallContext, ToolCallInput
from raygent.core.messages import ToolCall
from raygent.governance.decision import PolicyDecision
from raygent.serve.auth import governed_api
from raygent.serve.ingress import Ingress

GOVERNED = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "governed.yaml"


async def test_check_health_starts_the_approvals_sweeper_before_any_request(tmp_path: Path) -> None:
    fleet = load_fleet(GOVERNED, state_dir=tmp_path / "state")
    approvals = fleet.approvals.model_copy(update={"timeout_s": 0.05, "sweep_interval_s": 0.05})
    ingress = Ingress(fleet.model_copy(update={"approvals": approvals}), agents={})  # no agent is called
    gov = governed_api(ingress._service)
    assert gov is not None
    ctx = CallContext(
        run_id="run_gone-s1-c0", session_id="s", agent="refunds", identity="svc-refunds@acme",
        caller_chain=("support",), requester="C7", end_user="C7",
    )  # fmt: skip
    call = ToolCall(id="c0", name="issue_refund", arguments={"order_id": "1080", "amount_usd": 299.38})
    held = await gov.governance.approvals.hold(
        ToolCallInput(ctx, call), PolicyDecision(True, ("approval",), ("big",), amount_usd=299.38), None
    )
    await asyncio.sleep(0.1)  # past the approval's timeout; nothing runs a sweep yet
    assert (await gov.governance.approvals.get(held.approval_id)).status == "pending"
    await ingress.check_health()
    status = "pending"
    for _ in range(500):  # bounded wait for the sweeper's first rounds; no timing is asserted
        status = (await gov.governance.approvals.get(held.approval_id)).status
        if status != "pending":
            break
        await asyncio.sleep(0.02)
    assert status == "expired"
    await ingress._service.serving.aclose()
    assert gov._sweeper is not None
    gov._sweeper.cancel()
