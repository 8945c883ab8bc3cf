"""Role-based access control: roles grant permissions on agents, tools, approvals and audit; anything
not granted is denied.

Permissions read ``resource:action[:name]`` with ``*`` matching one part: ``agents:run:support``,
``tools:call:issue_refund``, ``approvals:read``, ``approvals:decide``, ``audit:read``,
``identities:revoke``. API callers hold the roles in their token; agents hold the roles their identity
is bound to in the fleet file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from raygent.core.govconfig import RoleSpec, permission_matches
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.governance.audit import AuditWriter
from raygent.governance.errors import PermissionDeniedError
from raygent.governance.refusal import refuse

__all__ = ["Rbac", "RbacToolInterceptor"]


class Rbac:
    """The fleet's roles. Deny by default: no role, or an unknown role, grants nothing."""

    def __init__(self, roles: Mapping[str, RoleSpec]) -> None:
        self._roles = dict(roles)
        self._identity_roles: dict[str, tuple[str, ...]] = {}
        for name, role in self._roles.items():
            for identity in role.identities:
                self._identity_roles[identity] = (*self._identity_roles.get(identity, ()), name)

    @property
    def enabled(self) -> bool:
        return bool(self._roles)

    def roles_of_identity(self, identity: str) -> tuple[str, ...]:
        return self._identity_roles.get(identity, ())

    def allows(self, roles: Iterable[str], permission: str) -> bool:
        for role in roles:
            spec = self._roles.get(role)
            if spec is not None and any(permission_matches(p, permission) for p in spec.permissions):
                return True
        return False

    def require(self, roles: Iterable[str], permission: str, *, who: str) -> None:
        """Raises :class:`PermissionDeniedError` unless one of ``roles`` grants ``permission``."""
        roles = tuple(roles)
        if not self.allows(roles, permission):
            held = ", ".join(roles) or "none"
            raise PermissionDeniedError(
                f"{who} (roles: {held}) is not granted {permission!r}",
                extra={"permission": permission},
            )


class RbacToolInterceptor(ToolInterceptor):
    """An agent may call a tool only if a role bound to its identity grants ``tools:call:<tool>``."""

    def __init__(self, rbac: Rbac, writer: AuditWriter) -> None:
        self._rbac = rbac
        self._writer = writer

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        identity = inp.ctx.identity
        try:
            self._rbac.require(
                self._rbac.roles_of_identity(identity),
                f"tools:call:{inp.call.name}",
                who=f"identity {identity!r}",
            )
        except PermissionDeniedError as err:
            return await refuse(self._writer, inp, err, stage="rbac")
        return await self.next.call_tool(inp)
