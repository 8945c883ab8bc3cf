"""Wires the gateway's credentials into its tool-call chain: egress rules, redaction, and the kill
switch.

- :class:`~raygent.governance.egress.EgressInterceptor` sits before audit, so a refused request leaves
  a ``policy_decision`` record and never a ``tool_call`` intent.
- :class:`~raygent.governance.redaction.RedactionInterceptor` is innermost, so every stage above it
  (the effect ledger, audit, tracing, the model) sees the result already masked.
- With governance on, the kill switch becomes the credentials' revocation check: a revoked identity's
  tokens and leases are dropped at its next call (:class:`RevocationSweep`, before the kill switch stage
  refuses it) and nothing credentialed is sent (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from raygent.core.clock import Clock
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.core.store.base import Store
from raygent.governance.audit import AuditWriter
from raygent.governance.egress import EgressGuard, EgressInterceptor
from raygent.governance.gateway import ToolGateway
from raygent.governance.redaction import RedactionInterceptor, Redactor, install_log_redaction
from raygent.integrations.credentials import Credentials

__all__ = ["CredentialStages", "RevocationSweep", "credential_stages"]


class RevocationSweep(ToolInterceptor):
    """Before the kill switch refuses a revoked identity's call, drop the tokens and leases it holds in
    this replica, so revocation takes them away at the identity's next call whatever tool it names."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        await self._credentials.sweep(inp.ctx.identity)
        return await self.next.call_tool(inp)


@dataclass
class CredentialStages:
    """What :func:`credential_stages` adds to a gateway's chain."""

    redactor: Redactor
    before_governance: list[ToolInterceptor] = field(default_factory=list)
    before_audit: list[ToolInterceptor] = field(default_factory=list)
    innermost: list[ToolInterceptor] = field(default_factory=list)
    uninstall_logs: Callable[[], None] | None = None


def credential_stages(gateway: ToolGateway, *, store: Store, clock: Clock) -> CredentialStages:
    """The credential stages of ``gateway``'s chain, and the kill switch wired into its credentials."""
    from raygent.governance.runtime import governance_enabled

    fleet = gateway.fleet
    redactor = Redactor.for_fleet(fleet, known=gateway.credentials.known)
    stages = CredentialStages(redactor=redactor, innermost=[RedactionInterceptor(redactor)])
    writer = AuditWriter(store, clock, redactor=redactor)
    if any(getattr(t, "kind", "") == "http" for t in fleet.tools.values()):
        stages.before_audit.append(EgressInterceptor(fleet, EgressGuard(fleet), writer))
        stages.uninstall_logs = install_log_redaction(redactor)
    if governance_enabled(fleet):
        from raygent.governance.killswitch import KillSwitch
        from raygent.governance.state import open_governance_db

        switch = KillSwitch(open_governance_db(fleet), fleet=fleet, writer=writer, clock=clock)

        async def revoked(identity: str) -> str | None:
            rev = await switch.is_revoked(identity)
            return None if rev is None else (rev.reason or f"revoked by {rev.actor}")

        gateway.credentials.set_revocation_check(revoked)
        stages.before_governance.append(RevocationSweep(gateway.credentials))
    return stages
