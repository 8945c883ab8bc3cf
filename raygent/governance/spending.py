"""Per-agent, per-day limits on what side-effecting tools move (refunds, payouts) — money, not tokens.

Each governed call reserves its amount before the tool runs, atomically against the day's total (one
write transaction, exclusive across processes and, with ``store.governance_dsn``, machines, so
concurrent gateway replicas cannot both squeeze under the cap); the
reservation is committed when the tool succeeds and released when it fails. Days are UTC. A retried
call (same run and call id) reserves once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from raygent.core.clock import Clock
from raygent.core.govconfig import SpendingLimitSpec
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.governance.audit import AuditWriter
from raygent.governance.errors import SpendingLimitError
from raygent.governance.refusal import refuse
from raygent.governance.state import GovernanceConn, GovernanceState

__all__ = ["Reservation", "SpendingInterceptor", "SpendingLedger"]


@dataclass(frozen=True, slots=True)
class Reservation:
    ok: bool
    spent_before_usd: float
    amount_usd: float
    limit_usd: float


class SpendingLedger:
    """Reservations per agent, tool and UTC day in the governance state."""

    def __init__(self, db: GovernanceState, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def day(self) -> str:
        return datetime.fromtimestamp(self._clock.now(), UTC).strftime("%Y-%m-%d")

    async def reserve(
        self, *, agent: str, tool: str, call_key: str, amount_usd: float, limit_usd: float
    ) -> Reservation:
        day, now = self.day(), self._clock.now()

        def write(conn: GovernanceConn) -> Reservation:
            spent = conn.execute(
                "SELECT COALESCE(SUM(amount_usd), 0) FROM spend WHERE agent = ? AND tool = ? AND day = ? "
                "AND state != 'released' AND call_key != ?",
                (agent, tool, day, call_key),
            ).fetchone()[0]
            existing = conn.execute("SELECT state FROM spend WHERE call_key = ?", (call_key,)).fetchone()
            if existing is not None and existing[0] != "released":
                return Reservation(True, float(spent), amount_usd, limit_usd)
            # Cents, so a float sum like 0.1 + 0.2 cannot push a call exactly at the cap over it.
            if round((spent + amount_usd) * 100) > round(limit_usd * 100):
                return Reservation(False, float(spent), amount_usd, limit_usd)
            conn.execute(
                "INSERT INTO spend (call_key, agent, tool, day, amount_usd, state, ts) "
                "VALUES (?, ?, ?, ?, ?, 'reserved', ?) ON CONFLICT (call_key) DO UPDATE SET "
                "state = 'reserved', amount_usd = excluded.amount_usd, day = excluded.day, ts = excluded.ts",
                (call_key, agent, tool, day, amount_usd, now),
            )
            return Reservation(True, float(spent), amount_usd, limit_usd)

        return await self._db.run(write, write=True)

    async def settle(self, call_key: str, *, committed: bool) -> None:
        state = "committed" if committed else "released"
        await self._db.run(
            lambda conn: conn.execute("UPDATE spend SET state = ? WHERE call_key = ?", (state, call_key)),
            write=True,
        )

    async def spent_today(self, agent: str, tool: str) -> float:
        day = self.day()

        def read(conn: GovernanceConn) -> float:
            row = conn.execute(
                "SELECT COALESCE(SUM(amount_usd), 0) FROM spend WHERE agent = ? AND tool = ? AND day = ? "
                "AND state != 'released'",
                (agent, tool, day),
            ).fetchone()
            return float(row[0])

        return await self._db.run(read, write=False)


class SpendingInterceptor(ToolInterceptor):
    """Refuses a call that would take its agent past the day's cap for that tool."""

    def __init__(
        self, ledger: SpendingLedger, limits: Sequence[SpendingLimitSpec], writer: AuditWriter
    ) -> None:
        self._ledger = ledger
        self._limits = {limit.tool: limit for limit in limits}
        self._writer = writer

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        limit = self._limits.get(inp.call.name)
        if limit is None or (limit.agents and inp.ctx.agent not in limit.agents):
            return await self.next.call_tool(inp)
        try:
            amount = float(inp.call.arguments[limit.amount_arg])
        except (KeyError, TypeError, ValueError):
            err = SpendingLimitError(f"{inp.call.name} needs a numeric {limit.amount_arg!r} to be checked")
            return await refuse(self._writer, inp, err, stage="spending")
        key = f"{inp.ctx.run_id}/{inp.call.id}"
        res = await self._ledger.reserve(
            agent=inp.ctx.agent,
            tool=inp.call.name,
            call_key=key,
            amount_usd=amount,
            limit_usd=limit.per_agent_per_day_usd,
        )
        if not res.ok:
            err = SpendingLimitError(
                f"{inp.call.name} of ${amount:.2f} would take agent {inp.ctx.agent!r} past its daily limit "
                "of "
                f"${limit.per_agent_per_day_usd:.2f} (${res.spent_before_usd:.2f} already today)",
                extra={
                    "spent_today_usd": round(res.spent_before_usd, 2),
                    "limit_usd": limit.per_agent_per_day_usd,
                },
            )
            details = {"spent_today_usd": round(res.spent_before_usd, 2), "amount_usd": amount}
            return await refuse(self._writer, inp, err, stage="spending", details=details)
        try:
            out = await self.next.call_tool(inp)
        except BaseException:
            await self._ledger.settle(key, committed=False)
            raise
        await self._ledger.settle(key, committed=not out.is_error)
        return out
