"""The kill switch: take an agent identity out of service at once, and put it back.

Revocation is durable (governance state) and checked on every tool call at the gateway and on every
new run at the ingress, so it takes effect without a redeploy: in-flight runs' next tool calls fail
closed, new runs are refused. Revoking and restoring are audited.
"""

from __future__ import annotations

from dataclasses import dataclass

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import NotFoundError
from raygent.core.interceptors import CallContext, ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.governance.audit import AuditWriter
from raygent.governance.errors import IdentityRevokedError, PermissionDeniedError
from raygent.governance.refusal import refuse
from raygent.governance.state import GovernanceConn, GovernanceState

__all__ = ["IdentityInterceptor", "KillSwitch", "Revocation"]


@dataclass(frozen=True, slots=True)
class Revocation:
    identity: str
    reason: str
    actor: str
    ts: float


class KillSwitch:
    """Revoked identities, by agent name or identity."""

    def __init__(self, db: GovernanceState, *, fleet: Fleet, writer: AuditWriter, clock: Clock) -> None:
        self._db = db
        self._fleet = fleet
        self._writer = writer
        self._clock = clock

    def identity_of(self, agent_or_identity: str) -> tuple[str, str]:
        """``(agent, identity)`` for an agent name or an agent identity.

        Raises:
            NotFoundError: Neither names an agent of the fleet.
        """
        spec = self._fleet.agents.get(agent_or_identity)
        if spec is not None:
            return agent_or_identity, spec.identity
        for name, agent in self._fleet.agents.items():
            if agent.identity == agent_or_identity:
                return name, agent.identity
        raise NotFoundError(f"no agent or agent identity named {agent_or_identity!r}")

    async def revoke(self, agent_or_identity: str, *, actor: str, reason: str) -> Revocation:
        agent, identity = self.identity_of(agent_or_identity)
        rev = Revocation(identity, reason, actor, self._clock.now())
        await self._db.run(
            lambda c: c.execute(
                "INSERT INTO revocations (identity, reason, actor, ts) VALUES (?, ?, ?, ?) ON CONFLICT "
                "(identity) DO UPDATE SET reason = excluded.reason, actor = excluded.actor, ts = excluded.ts",
                (rev.identity, rev.reason, rev.actor, rev.ts),
            ),
            write=True,
        )
        await self._audit(agent, identity, "identity_revoked", actor, reason)
        return rev

    async def restore(self, agent_or_identity: str, *, actor: str, reason: str = "") -> bool:
        """Put the identity back in service; False if it was not revoked."""
        agent, identity = self.identity_of(agent_or_identity)
        cursor = await self._db.run(
            lambda c: c.execute("DELETE FROM revocations WHERE identity = ?", (identity,)), write=True
        )
        await self._audit(agent, identity, "identity_restored", actor, reason)
        return bool(cursor.rowcount)

    async def is_revoked(self, identity: str) -> Revocation | None:
        def read(conn: GovernanceConn) -> Revocation | None:
            row = conn.execute(
                "SELECT identity, reason, actor, ts FROM revocations WHERE identity = ?", (identity,)
            ).fetchone()
            return None if row is None else Revocation(row[0], row[1], row[2], row[3])

        return await self._db.run(read, write=False)

    async def revoked(self) -> list[Revocation]:
        rows = await self._db.run(
            lambda c: c.execute("SELECT identity, reason, actor, ts FROM revocations ORDER BY ts").fetchall(),
            write=False,
        )
        return [Revocation(r[0], r[1], r[2], r[3]) for r in rows]

    async def _audit(self, agent: str, identity: str, action: str, actor: str, reason: str) -> None:
        ctx = CallContext(run_id="", session_id="", agent=agent, identity=identity)
        await self._writer.write(ctx, "action", {"action": action, "actor": actor, "reason": reason})


class IdentityInterceptor(ToolInterceptor):
    """First governance stage: the caller must be the agent's own identity, and not revoked."""

    def __init__(self, switch: KillSwitch, fleet: Fleet, writer: AuditWriter) -> None:
        self._switch = switch
        self._fleet = fleet
        self._writer = writer

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        ctx = inp.ctx
        agent = self._fleet.agents.get(ctx.agent)
        if agent is None or agent.identity != ctx.identity:
            wrong = PermissionDeniedError(
                f"identity {ctx.identity!r} is not the identity of agent {ctx.agent!r}"
            )
            return await refuse(self._writer, inp, wrong, stage="identity")
        revoked = await self._switch.is_revoked(ctx.identity)
        if revoked is not None:
            err = IdentityRevokedError(
                f"identity {ctx.identity!r} was revoked by {revoked.actor}: "
                f"{revoked.reason or 'no reason given'}"
            )
            return await refuse(self._writer, inp, err, stage="identity")
        return await self.next.call_tool(inp)
