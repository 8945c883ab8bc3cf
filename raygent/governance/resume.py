"""Resuming runs parked on a held tool call, once the approval closes (approved, denied or expired).

The run resumed is the *root* run (the one the caller started): it repeats its pending tool call, the
gateway continues the delegated run under it (same derived id), and that run repeats the held call,
which the approval interceptor now lets through or refuses. A decided approval whose root run is still
parked (the process died between decision and resume, or it expired) is picked up by :meth:`sweep`.
"""

from __future__ import annotations

import logging

from raygent.core.errors import ConflictError
from raygent.core.runs import AgentInvoker, RunInput, RunOutput
from raygent.governance.approvals import Approval
from raygent.governance.runtime import Governance

__all__ = ["RunResumer"]

log = logging.getLogger("raygent.governance")

_SWEEP_WINDOW_S = 7 * 86_400


class RunResumer:
    def __init__(self, governance: Governance, invoker: AgentInvoker) -> None:
        self._gov = governance
        self._invoker = invoker

    async def resume(self, approval: Approval) -> RunOutput | None:
        """Resume the root run of a closed approval; None when it is not parked (already resumed)."""
        if approval.status == "pending":
            return None
        store, fleet, clock = self._gov.store, self._gov.fleet, self._gov.clock
        record = await store.get_run(approval.root_run_id)
        if record is None or record.status != "needs_approval":
            return None
        spec = fleet.agents.get(approval.root_agent)
        if spec is None:
            return None
        req = RunInput(
            run_id=record.run_id,
            agent=record.agent,
            input=record.input,
            session_id=record.session_id,
            deadline_ts=clock.now() + spec.deadline_s,
            caller_chain=tuple(record.caller_chain),
            requester=approval.requester,
            end_user=approval.end_user,
            resume=True,
        )
        try:
            return await self._invoker.invoke(req)
        except ConflictError:
            return None  # another resumer claimed it first

    async def sweep(self) -> int:
        """Expire overdue approvals (timeout = deny) and resume every closed one whose run still waits."""
        await self._gov.approvals.expire_due()
        horizon = self._gov.clock.now() - _SWEEP_WINDOW_S
        resumed = 0
        for approval in await self._gov.approvals.find_all(limit=500):
            if approval.status == "pending" or (approval.decided_at or 0) < horizon:
                continue
            try:
                if await self.resume(approval) is not None:
                    resumed += 1
            except Exception:  # one bad run must not stop the sweep of the others
                log.exception("could not resume run %s", approval.root_run_id)
        return resumed
