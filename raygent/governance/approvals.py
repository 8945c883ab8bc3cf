"""Human approval of held tool calls: durable pending approvals, four-eyes rules, signed decisions.

A call whose policy decision carries the ``approval`` obligation is *held*: :class:`ApprovalInterceptor`
records a pending :class:`Approval` (keyed by run and call id, so a resumed run finds the same one) and
raises :class:`~raygent.governance.errors.ApprovalRequiredError`; the run parks. A person with the
approver role decides through the API, the CLI or the approvals page (:class:`ApprovalBook.decide`):

- the requester (who started the run, or the end user it acts for) never approves their own run;
- above ``two_approvers_above_usd`` two different approvers must approve; one deny closes it;
- a pending approval older than ``timeout_s`` is expired, which is a deny;
- every decision is signed with the fleet's Ed25519 key and written to the audit trail.

When the parked run resumes it calls the tool again with the same call id; the interceptor lets it
through only if the approval is approved, every signature verifies, and the SHA-256 of the arguments
is the one the approvers saw.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from raygent.core.clock import Clock
from raygent.core.errors import ConflictError
from raygent.core.govconfig import ApprovalsSpec
from raygent.core.ids import new_id
from raygent.core.interceptors import CallContext, ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.core.store.base import canonical_json, sha256_hex
from raygent.governance.audit import AuditWriter
from raygent.governance.decision import CURRENT_DECISION, CURRENT_VERDICT, PolicyDecision
from raygent.governance.errors import (
    ApprovalClosedError,
    ApprovalDeniedError,
    ApprovalRequiredError,
    SelfApprovalError,
    UnknownApprovalError,
)
from raygent.governance.refusal import refuse
from raygent.governance.signing import Signer
from raygent.governance.state import GovernanceConn, GovernanceState

__all__ = [
    "Approval",
    "ApprovalBook",
    "ApprovalInterceptor",
    "ApprovalStatus",
    "arguments_sha256",
    "root_of",
]

ApprovalStatus = Literal["pending", "approved", "denied", "expired"]
Decision = Literal["approve", "deny"]

_COLUMNS = (
    "approval_id, run_id, call_id, root_run_id, root_agent, agent, identity, tool, arguments, args_sha256, "
    "context, requester, end_user, amount_usd, approvals_needed, status, created_at, expires_at, "
    "decided_at, decisions"
)


def arguments_sha256(tool: str, arguments: dict[str, Any]) -> str:
    """What approvers approve: the tool and its exact arguments."""
    return sha256_hex(canonical_json({"tool": tool, "arguments": arguments}))


def root_of(ctx: CallContext) -> tuple[str, str]:
    """``(root run id, root agent)`` of a (possibly delegated) run: delegated run ids extend their
    parent's with ``-s<step>-c<index>`` (see the gateway), so the root is the part before the first dash."""
    root_agent = ctx.caller_chain[0] if ctx.caller_chain else ctx.agent
    return ctx.run_id.split("-", 1)[0], root_agent


@dataclass(slots=True)
class Approval:
    approval_id: str
    run_id: str
    call_id: str
    root_run_id: str
    root_agent: str
    agent: str
    identity: str
    tool: str
    arguments: dict[str, Any]
    args_sha256: str
    context: dict[str, Any]
    requester: str
    end_user: str
    amount_usd: float | None
    approvals_needed: int
    status: ApprovalStatus
    created_at: float
    expires_at: float
    decided_at: float | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def approvers(self) -> list[str]:
        return [d["approver"] for d in self.decisions if d["decision"] == "approve"]


def _from_row(row: Any) -> Approval:
    # sqlite3.Row or pgstate.PgRow: both are read by column name.
    return Approval(
        approval_id=row["approval_id"],
        run_id=row["run_id"],
        call_id=row["call_id"],
        root_run_id=row["root_run_id"],
        root_agent=row["root_agent"],
        agent=row["agent"],
        identity=row["identity"],
        tool=row["tool"],
        arguments=json.loads(row["arguments"]),
        args_sha256=row["args_sha256"],
        context=json.loads(row["context"]),
        requester=row["requester"],
        end_user=row["end_user"],
        amount_usd=row["amount_usd"],
        approvals_needed=row["approvals_needed"],
        status=row["status"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        decided_at=row["decided_at"],
        decisions=json.loads(row["decisions"]),
    )


def _decision_payload(approval: Approval, entry: dict[str, Any]) -> dict[str, Any]:
    """What a decision's signature covers: who decided what about exactly which call."""
    return {
        "approval_id": approval.approval_id,
        "run_id": approval.run_id,
        "call_id": approval.call_id,
        "tool": approval.tool,
        "args_sha256": approval.args_sha256,
        "approver": entry["approver"],
        "decision": entry["decision"],
        "reason": entry["reason"],
        "ts": entry["ts"],
    }


class ApprovalBook:
    """The durable approvals and their rules.

    Args:
        db: Governance state.
        spec: Approval settings (timeout, four-eyes threshold).
        signer: Signs every decision.
        writer: Audit writer for holds and decisions.
        clock: Time source (creation, expiry, decisions).
    """

    def __init__(
        self, db: GovernanceState, *, spec: ApprovalsSpec, signer: Signer, writer: AuditWriter, clock: Clock
    ) -> None:
        self._db = db
        self._spec = spec
        self._signer = signer
        self._writer = writer
        self._clock = clock

    @property
    def spec(self) -> ApprovalsSpec:
        return self._spec

    def approvals_needed(self, amount_usd: float | None) -> int:
        threshold = self._spec.two_approvers_above_usd
        return 2 if threshold is not None and amount_usd is not None and amount_usd > threshold else 1

    async def hold(
        self, inp: ToolCallInput, decision: PolicyDecision, verdict: dict[str, Any] | None
    ) -> Approval:
        """The pending approval of this call, created on first sight (idempotent per run and call)."""
        ctx, call = inp.ctx, inp.call
        root_run, root_agent = root_of(ctx)
        now = self._clock.now()
        context = {**decision.context, "policies": list(decision.policies)}
        if verdict is not None:
            context["validation"] = verdict
        candidate = Approval(
            approval_id=new_id("apr"),
            run_id=ctx.run_id,
            call_id=call.id,
            root_run_id=root_run,
            root_agent=root_agent,
            agent=ctx.agent,
            identity=ctx.identity,
            tool=call.name,
            arguments=dict(call.arguments),
            args_sha256=arguments_sha256(call.name, call.arguments),
            context=json.loads(canonical_json(context)),
            requester=ctx.requester,
            end_user=ctx.end_user,
            amount_usd=decision.amount_usd,
            approvals_needed=self.approvals_needed(decision.amount_usd),
            status="pending",
            created_at=now,
            expires_at=now + self._spec.timeout_s,
        )

        def write(conn: GovernanceConn) -> tuple[Approval, bool]:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE run_id = ? AND call_id = ?", (ctx.run_id, call.id)
            ).fetchone()
            if row is not None:
                return _from_row(row), False
            a = candidate
            conn.execute(
                f"INSERT INTO approvals ({_COLUMNS}) VALUES ({', '.join('?' * 20)})",
                (
                    a.approval_id, a.run_id, a.call_id, a.root_run_id, a.root_agent, a.agent, a.identity,
                    a.tool, canonical_json(a.arguments), a.args_sha256, canonical_json(a.context),
                    a.requester, a.end_user, a.amount_usd, a.approvals_needed, a.status, a.created_at,
                    a.expires_at, None, "[]",
                ),
            )  # fmt: skip
            return a, True

        approval, created = await self._db.run(write, write=True)
        if created:
            await self._writer.write(
                ctx,
                "approval",
                {
                    "event": "held",
                    "approval_id": approval.approval_id,
                    "tool": call.name,
                    "call_id": call.id,
                    "args_sha256": approval.args_sha256,
                    "approvals_needed": approval.approvals_needed,
                    "expires_at": approval.expires_at,
                },
            )
        return approval

    async def held(
        self, inp: ToolCallInput, decision: PolicyDecision, verdict: dict[str, Any] | None
    ) -> Approval:
        """The approval of this call, held now on first sight; one still pending past its timeout is
        expired first (pending longer counts as denied)."""
        approval = await self.find(inp.ctx.run_id, inp.call.id)
        if approval is None:
            approval = await self.hold(inp, decision, verdict)
        if approval.status == "pending" and self._clock.now() >= approval.expires_at:
            await self.expire_due()
            approval = await self.get(approval.approval_id)
        return approval

    def grants(self, approval: Approval, inp: ToolCallInput) -> bool:
        """Whether ``approval`` lets exactly this call through: approved, for these arguments, with
        decisions whose signatures verify."""
        return (
            approval.status == "approved"
            and approval.args_sha256 == arguments_sha256(inp.call.name, inp.call.arguments)
            and self.signatures_valid(approval)
        )

    async def get(self, approval_id: str) -> Approval:
        def read(conn: GovernanceConn) -> Approval | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE approval_id = ?", (approval_id,)
            ).fetchone()
            return None if row is None else _from_row(row)

        found = await self._db.run(read, write=False)
        if found is None:
            raise UnknownApprovalError(f"there is no approval {approval_id!r}")
        return found

    async def find(self, run_id: str, call_id: str) -> Approval | None:
        def read(conn: GovernanceConn) -> Approval | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE run_id = ? AND call_id = ?", (run_id, call_id)
            ).fetchone()
            return None if row is None else _from_row(row)

        return await self._db.run(read, write=False)

    async def find_all(self, *, status: ApprovalStatus | None = None, limit: int = 100) -> list[Approval]:
        where, params = ("WHERE status = ?", [status]) if status else ("", [])

        def read(conn: GovernanceConn) -> list[Approval]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals {where} ORDER BY created_at DESC LIMIT ?", [*params, limit]
            ).fetchall()
            return [_from_row(r) for r in rows]

        return await self._db.run(read, write=False)

    async def decide(self, approval_id: str, *, approver: str, decision: Decision, reason: str) -> Approval:
        """Record one approver's decision.

        Raises:
            UnknownApprovalError: No such approval.
            ApprovalClosedError: Already approved, denied or expired (a late decision expires it first).
            SelfApprovalError: ``approver`` is the requester or the end user of the run.
            ConflictError: ``approver`` already approved it (four-eyes needs someone else).
        """
        now = self._clock.now()

        def write(conn: GovernanceConn) -> tuple[Approval, dict[str, Any] | None, str | None]:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE approval_id = ?", (approval_id,)
            ).fetchone()
            if row is None:
                raise UnknownApprovalError(f"there is no approval {approval_id!r}")
            a = _from_row(row)
            if a.status == "pending" and now >= a.expires_at:
                self._close(conn, a, "expired", now)
                return a, None, "expired"
            if a.status != "pending":
                raise ApprovalClosedError(f"approval {approval_id} is already {a.status}")
            if approver in (a.requester, a.end_user):
                raise SelfApprovalError(f"{approver!r} requested this run and cannot approve it")
            if any(d["approver"] == approver for d in a.decisions):
                raise ConflictError(
                    f"{approver!r} already decided approval {approval_id}; a second approver is needed",
                    retryable=False,
                )
            entry: dict[str, Any] = {"approver": approver, "decision": decision, "reason": reason, "ts": now}
            entry["key_id"] = self._signer.key_id
            entry["signature"] = self._signer.sign(_decision_payload(a, entry))
            a.decisions.append(entry)
            if decision == "deny":
                self._close(conn, a, "denied", now)
            elif len(a.approvers) >= a.approvals_needed:
                self._close(conn, a, "approved", now)
            else:
                conn.execute(
                    "UPDATE approvals SET decisions = ? WHERE approval_id = ?",
                    (canonical_json(a.decisions), a.approval_id),
                )
            return a, entry, None

        approval, entry, closed = await self._db.run(write, write=True)
        ctx = self._ctx_of(approval)
        if closed == "expired":
            await self._writer.write(ctx, "approval", self._event(approval, "expired"))
            raise ApprovalClosedError(
                f"approval {approval_id} expired before a decision; it counts as denied"
            )
        assert entry is not None  # set whenever the approval was not closed above
        await self._writer.write(
            ctx,
            "approval",
            {
                **self._event(approval, "decided"),
                "approver": approver,
                "decision": decision,
                "reason": reason,
                "key_id": entry["key_id"],
                "signature": entry["signature"],
            },
        )
        return approval

    @staticmethod
    def _close(conn: GovernanceConn, a: Approval, status: ApprovalStatus, now: float) -> None:
        a.status, a.decided_at = status, now
        conn.execute(
            "UPDATE approvals SET status = ?, decided_at = ?, decisions = ? WHERE approval_id = ?",
            (status, now, canonical_json(a.decisions), a.approval_id),
        )

    async def expire_due(self) -> list[Approval]:
        """Expire every pending approval past its timeout (timeout = deny); returns them."""
        now = self._clock.now()

        def write(conn: GovernanceConn) -> list[Approval]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE status = 'pending' AND expires_at <= ?", (now,)
            ).fetchall()
            expired = [_from_row(r) for r in rows]
            for a in expired:
                self._close(conn, a, "expired", now)
            return expired

        expired = await self._db.run(write, write=True)
        for approval in expired:
            await self._writer.write(self._ctx_of(approval), "approval", self._event(approval, "expired"))
        return expired

    def signatures_valid(self, approval: Approval) -> bool:
        """Every recorded decision carries a valid signature of this fleet's key over this call."""
        return all(
            self._signer.verify(_decision_payload(approval, d), str(d.get("signature", "")))
            for d in approval.decisions
        )

    def _ctx_of(self, a: Approval) -> CallContext:
        return CallContext(
            run_id=a.run_id, session_id="", agent=a.agent, identity=a.identity, requester=a.requester,
            end_user=a.end_user,
        )  # fmt: skip

    @staticmethod
    def _event(a: Approval, event: str) -> dict[str, Any]:
        return {"event": event, "approval_id": a.approval_id, "tool": a.tool, "call_id": a.call_id,
                "status": a.status, "args_sha256": a.args_sha256}  # fmt: skip


class ApprovalInterceptor(ToolInterceptor):
    """Holds calls whose decision requires approval; lets the resumed call through once approved."""

    def __init__(self, book: ApprovalBook, writer: AuditWriter) -> None:
        self._book = book
        self._writer = writer

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        decision = CURRENT_DECISION.get()
        if decision is None or "approval" not in decision.obligations:
            return await self.next.call_tool(inp)
        approval = await self._book.held(inp, decision, CURRENT_VERDICT.get())
        if approval.status == "pending":
            raise ApprovalRequiredError(
                f"{inp.call.name} needs approval by {approval.approvals_needed} approver(s): "
                f"approval {approval.approval_id}",
                extra={
                    "approval_id": approval.approval_id,
                    "approval_url": f"/v1/approvals/{approval.approval_id}",
                    "tool": inp.call.name,
                },
            )
        if approval.status != "approved":
            reasons = "; ".join(
                d["reason"] for d in approval.decisions if d["decision"] == "deny" and d["reason"]
            )
            why = "nobody decided before the timeout" if approval.status == "expired" else reasons or "denied"
            err = ApprovalDeniedError(f"approval {approval.approval_id} was {approval.status}: {why}")
            return await refuse(
                self._writer, inp, err, stage="approval", details={"approval_id": approval.approval_id}
            )
        if approval.args_sha256 != arguments_sha256(inp.call.name, inp.call.arguments):
            err = ApprovalDeniedError(
                f"the arguments of {inp.call.name} changed after approval {approval.approval_id}; refusing"
            )
            return await refuse(
                self._writer, inp, err, stage="approval", details={"approval_id": approval.approval_id}
            )
        if not self._book.signatures_valid(approval):
            err = ApprovalDeniedError(
                f"approval {approval.approval_id} carries a signature that does not verify"
            )
            return await refuse(
                self._writer, inp, err, stage="approval", details={"approval_id": approval.approval_id}
            )
        return await self.next.call_tool(inp)
