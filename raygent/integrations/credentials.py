"""The gateway's credentials: secrets, OAuth2 tokens, and the one place an identity is cut off.

Built once per gateway replica. Before anything credentialed is handed to a tool, :meth:`Credentials.
ensure_active` checks that the identity is not revoked (locally, or through the kill switch's check when
the fleet has governance); a revoked identity's tokens and leases are dropped at once and the call fails
closed, so a revoked agent cannot send a single authenticated byte.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.integrations.errors import CredentialRevokedError
from raygent.integrations.oauth2 import OAuth2Tokens
from raygent.integrations.secrets.known import KnownSecrets
from raygent.integrations.secrets.resolver import SecretResolver

__all__ = ["Credentials", "RevocationCheck", "RevokeReport"]

log = logging.getLogger("raygent.credentials")

# Answers whether an identity is revoked, with a reason ("" for not revoked); e.g. the kill switch's.
RevocationCheck = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class RevokeReport:
    identity: str
    tokens_dropped: int
    leases_revoked: int


class Credentials:
    """Secrets, tokens and revocation for one gateway replica.

    Args:
        fleet: The fleet (OAuth2 clients, secrets providers).
        clock: Wall clock.
        transport: A :data:`~raygent.integrations.oauth2.token_http` transport for the token endpoint
            (tests); default: real HTTP.
        revocation_check: Asked before every credentialed call; a reason means revoked.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        clock: Clock,
        transport: Any = None,
        revocation_check: RevocationCheck | None = None,
    ) -> None:
        self.known = KnownSecrets()
        self.secrets = SecretResolver.from_fleet(fleet, clock=clock, known=self.known)
        self.tokens = OAuth2Tokens(
            fleet.credentials.clients,
            secrets=self.secrets,
            clock=clock,
            known=self.known,
            transport=transport,
        )
        self._revocation_check = revocation_check
        self._revoked: dict[str, str] = {}

    def set_revocation_check(self, check: RevocationCheck | None) -> None:
        """Wire the kill switch in (the gateway's chain builder does this when governance is on)."""
        self._revocation_check = check

    async def ensure_active(self, identity: str) -> None:
        """Fail closed for a revoked identity, dropping whatever it still holds.

        Raises:
            CredentialRevokedError: The identity is revoked here or by the kill switch.
        """
        reason = self._revoked.get(identity)
        if reason is None and self._revocation_check is not None:
            reason = await self._revocation_check(identity)
            if reason is not None:
                # Not remembered here: the kill switch stays the one source, so restoring it there is
                # enough to bring the identity back.
                await self._drop(identity)
        if reason is not None:
            raise CredentialRevokedError(f"identity {identity!r} is revoked: {reason or 'no reason given'}")

    async def sweep(self, identity: str) -> RevokeReport | None:
        """If the kill switch says ``identity`` is revoked, drop what it still holds (without refusing:
        the governance stage that refuses the call audits it). Called for every tool call."""
        if self._revocation_check is None or not self._holds(identity):
            return None
        if await self._revocation_check(identity) is None:
            return None
        return await self._drop(identity)

    def _holds(self, identity: str) -> bool:
        return bool(self.tokens.cached(identity) or self.secrets.leases(identity))

    async def revoke(self, identity: str, *, reason: str = "") -> RevokeReport:
        """Cut ``identity`` off now: drop its cached tokens, revoke its leases, refuse its next calls."""
        self._revoked[identity] = reason
        return await self._drop(identity)

    async def _drop(self, identity: str) -> RevokeReport:
        report = RevokeReport(identity, self.tokens.drop(identity), await self.secrets.revoke(identity))
        log.warning(
            "credentials of %s revoked: %d tokens dropped, %d leases revoked",
            identity,
            report.tokens_dropped,
            report.leases_revoked,
        )
        return report

    def restore(self, identity: str) -> bool:
        """Let ``identity`` use credentials again (the kill switch must restore it too); False if it was
        not revoked here."""
        return self._revoked.pop(identity, None) is not None

    async def aclose(self) -> None:
        await self.tokens.aclose()
        await self.secrets.aclose()
