"""Parked runs of stateless agents: where a run waiting for a person's decision, or for a slow
backend's reply, keeps its progress.

A stateful agent checkpoints every step anyway; a stateless one keeps its progress only in memory, so
when a tool call is held for approval (``needs_approval``) or an ``mq`` tool with ``async_mode: park``
answers ``tool-pending`` (``waiting``) the step loop parks that progress here (durably, in the
fleet's governance state: ``governance.db``, or PostgreSQL with ``store.governance_dsn``). Resuming
*claims* it — read and delete in one transaction — so two resumers racing (the approver's request and
the sweeper; the reply listener and the restart sweep) cannot both continue the run.
"""

from __future__ import annotations

import json
from typing import Any

from raygent.core.clock import Clock, SystemClock
from raygent.core.config import Fleet, MqToolSpec
from raygent.core.store.base import canonical_json
from raygent.governance.runtime import governance_enabled
from raygent.governance.state import GovernanceConn, GovernanceState, open_governance_db

__all__ = ["ParkingLot", "has_parkable_tools"]


def has_parkable_tools(fleet: Fleet) -> bool:
    """Whether a tool of ``fleet`` can park a run on a pending reply (``async_mode: park``)."""
    return any(
        isinstance(t, MqToolSpec) and t.async_after_ms is not None and t.async_mode == "park"
        for t in fleet.tools.values()
    )


class ParkingLot:
    def __init__(self, db: GovernanceState, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    @classmethod
    def for_fleet(cls, fleet: Fleet, clock: Clock | None = None) -> ParkingLot | None:
        """The fleet's parking lot, or None when nothing can park a run: no governance (nothing can be
        held for approval) and no tool with ``async_mode: park``."""
        if not governance_enabled(fleet) and not has_parkable_tools(fleet):
            return None
        return cls(open_governance_db(fleet), clock or SystemClock())

    async def park(self, run_id: str, agent: str, progress: dict[str, Any]) -> None:
        payload, now = canonical_json(progress), self._clock.now()
        await self._db.run(
            lambda c: c.execute(
                "INSERT INTO parked_runs (run_id, agent, snapshot, ts) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (run_id) "
                "DO UPDATE SET snapshot = excluded.snapshot, ts = excluded.ts",
                (run_id, agent, payload, now),
            ),
            write=True,
        )

    async def claim(self, run_id: str) -> dict[str, Any] | None:
        """The parked progress of ``run_id``, removed; None if it is not parked (or already claimed)."""

        def take(conn: GovernanceConn) -> dict[str, Any] | None:
            row = conn.execute("SELECT snapshot FROM parked_runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM parked_runs WHERE run_id = ?", (run_id,))
            result: dict[str, Any] = json.loads(row[0])
            return result

        return await self._db.run(take, write=True)

    async def is_parked(self, run_id: str) -> bool:
        row = await self._db.run(
            lambda c: c.execute("SELECT 1 FROM parked_runs WHERE run_id = ?", (run_id,)).fetchone(),
            write=False,
        )
        return row is not None
