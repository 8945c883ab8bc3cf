"""Builds a fleet's governance from its fleet file: the shared state, keys, and the tool-call
interceptors in their one order.

    identity / kill switch → RBAC → Cedar policy → second-agent validation → approval hold
        → spending limit → (audit → execute, added by the gateway)

Cheap, local checks come first so a refused call costs little; the validator (another agent) runs
before a person is asked; money is reserved last, right before the tool runs, so a held call reserves
nothing until it is approved.
"""

from __future__ import annotations

from dataclasses import dataclass

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import ConfigError
from raygent.core.interceptors import ToolInterceptor
from raygent.core.runs import AgentInvoker
from raygent.core.store.base import Store
from raygent.governance.approvals import ApprovalBook, ApprovalInterceptor
from raygent.governance.audit import AuditWriter
from raygent.governance.checkpoints import Checkpointer
from raygent.governance.killswitch import IdentityInterceptor, KillSwitch
from raygent.governance.policy import PolicyEngine, PolicyInterceptor
from raygent.governance.rbac import Rbac, RbacToolInterceptor
from raygent.governance.signing import Signer
from raygent.governance.spending import SpendingInterceptor, SpendingLedger
from raygent.governance.state import GovernanceState, open_governance_db
from raygent.governance.validation import ValidationInterceptor

__all__ = ["Governance", "governance_enabled"]


def governance_enabled(fleet: Fleet) -> bool:
    """Whether the fleet file configures any governance section (otherwise none of it runs)."""
    return bool(
        fleet.auth is not None
        or fleet.roles
        or fleet.policies is not None
        or fleet.spending.limits
        or fleet.validation is not None
    )


@dataclass
class Governance:
    """A fleet's governance components, opened once per process (gateway, ingress, CLI)."""

    fleet: Fleet
    store: Store
    db: GovernanceState
    signer: Signer
    writer: AuditWriter
    rbac: Rbac
    killswitch: KillSwitch
    approvals: ApprovalBook
    spending: SpendingLedger
    checkpoints: Checkpointer
    clock: Clock

    @classmethod
    def open(cls, fleet: Fleet, *, store: Store, clock: Clock) -> Governance:
        db = open_governance_db(fleet)
        signer = Signer.from_file(fleet.state_path("keys") / "audit-ed25519.pem")
        writer = AuditWriter(store, clock)
        return cls(
            fleet=fleet,
            store=store,
            db=db,
            signer=signer,
            writer=writer,
            rbac=Rbac(fleet.roles),
            killswitch=KillSwitch(db, fleet=fleet, writer=writer, clock=clock),
            approvals=ApprovalBook(db, spec=fleet.approvals, signer=signer, writer=writer, clock=clock),
            spending=SpendingLedger(db, clock),
            checkpoints=Checkpointer(store, db, signer=signer, clock=clock),
            clock=clock,
        )

    def tool_interceptors(self, *, invoker: AgentInvoker | None) -> list[ToolInterceptor]:
        """The governance stages of the tool-call chain, outermost first.

        Raises:
            ConfigError: The policies do not parse, or the validation rules cannot be read.
        """
        fleet, writer = self.fleet, self.writer
        stages: list[ToolInterceptor] = [IdentityInterceptor(self.killswitch, fleet, writer)]
        if self.rbac.enabled:
            stages.append(RbacToolInterceptor(self.rbac, writer))
        if fleet.policies is not None:
            stages.append(PolicyInterceptor(PolicyEngine.from_fleet(fleet), writer))
        if fleet.validation is not None:
            path = fleet.resolve_path(fleet.validation.rules_file)
            try:
                rules = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read the validation rules {path}: {exc.strerror}") from None
            stages.append(
                ValidationInterceptor(
                    fleet,
                    fleet.validation,
                    rules=rules,
                    invoker=invoker,
                    store=self.store,
                    writer=writer,
                    clock=self.clock,
                )
            )
        if fleet.policies is not None:
            stages.append(ApprovalInterceptor(self.approvals, writer))
        if fleet.spending.limits:
            stages.append(SpendingInterceptor(self.spending, fleet.spending.limits, writer))
        return stages
