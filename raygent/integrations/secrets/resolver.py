"""Resolves secret references at call time, keeps leased secrets per agent identity and renews them,
and drops an identity's leases when it is revoked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.credconfig import EnvSecretsSpec, FileSecretsSpec, SecretRef, VaultSecretsSpec
from raygent.core.errors import RaygentError
from raygent.integrations.errors import SecretUnavailableError
from raygent.integrations.secrets.base import SecretProvider, SecretValue
from raygent.integrations.secrets.known import KnownSecrets

__all__ = ["SecretResolver", "build_providers"]

log = logging.getLogger("raygent.credentials")


def build_providers(fleet: Fleet, *, clock: Clock) -> dict[str, SecretProvider]:
    """One provider per entry of ``fleet.secrets.providers``; nothing connects here."""
    from raygent.integrations.secrets.local import EnvProvider, FileProvider

    providers: dict[str, SecretProvider] = {}
    for name, spec in fleet.secrets.providers.items():
        if isinstance(spec, EnvSecretsSpec):
            providers[name] = EnvProvider(spec)
        elif isinstance(spec, FileSecretsSpec):
            providers[name] = FileProvider(spec, base_dir=Path(fleet.base_dir))
        elif isinstance(spec, VaultSecretsSpec):
            from raygent.integrations.secrets.vault import VaultProvider  # only fleets with Vault import hvac

            providers[name] = VaultProvider(spec, clock=clock)
    return providers


@dataclass(slots=True)
class _Lease:
    provider: str
    secret: SecretValue


class SecretResolver:
    """Reads secrets for an agent identity; every value read is added to ``known`` so it is masked.

    Leased secrets are cached per (identity, reference) and renewed ``renew_before_s`` before they end;
    a lease that cannot be renewed is replaced by a fresh read.

    Args:
        providers: Providers by name (see :func:`build_providers`).
        clock: Wall clock for lease expiry.
        known: Where resolved values are registered for redaction.
        renew_before_s: Per provider, how long before its end a lease is renewed.
    """

    def __init__(
        self,
        providers: Mapping[str, SecretProvider],
        *,
        clock: Clock,
        known: KnownSecrets,
        renew_before_s: Mapping[str, float] | None = None,
    ) -> None:
        self._providers = dict(providers)
        self._clock = clock
        self._known = known
        self._renew_before_s = dict(renew_before_s or {})
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @classmethod
    def from_fleet(cls, fleet: Fleet, *, clock: Clock, known: KnownSecrets) -> SecretResolver:
        before = {
            name: spec.renew_before_s
            for name, spec in fleet.secrets.providers.items()
            if isinstance(spec, VaultSecretsSpec)
        }
        return cls(build_providers(fleet, clock=clock), clock=clock, known=known, renew_before_s=before)

    def leases(self, identity: str) -> list[str]:
        """The lease ids held for ``identity`` (for tests and the revoke report)."""
        return [
            lease.secret.lease_id or ""
            for (who, _), lease in self._leases.items()
            if who == identity and lease.secret.lease_id
        ]

    async def resolve(self, ref: SecretRef, *, identity: str) -> str:
        """The secret's value for a call made by ``identity``.

        Raises:
            SecretUnavailableError: The provider is unknown, or the secret cannot be read.
        """
        provider = self._providers.get(ref.provider)
        if provider is None:
            raise SecretUnavailableError(f"secret {ref}: no secrets provider named {ref.provider!r}")
        if not ref.lease:
            secret = await provider.read(ref)
        else:
            key = (identity, str(ref))
            async with self._locks.setdefault(key, asyncio.Lock()):
                secret = await self._leased(provider, ref, key)
        self._known.add(secret.value)
        return secret.value

    async def _leased(self, provider: SecretProvider, ref: SecretRef, key: tuple[str, str]) -> SecretValue:
        held = self._leases.get(key)
        now = self._clock.now()
        margin = self._renew_before_s.get(ref.provider, 0.0)
        if held is not None and (held.secret.expires_at is None or held.secret.expires_at - margin > now):
            return held.secret
        if held is not None and held.secret.renewable and held.secret.lease_id:
            try:
                duration = await provider.renew(held.secret.lease_id)
            except RaygentError:
                duration = 0.0
            if duration > margin:
                s = held.secret
                held.secret = SecretValue(s.value, s.lease_id, self._clock.now() + duration, s.renewable)
                log.info("renewed lease %s for %s (%.0f s)", s.lease_id, key[0], duration)
                return held.secret
        # No lease yet, or it ran out and could not be renewed: read a fresh one, let the old one go.
        fresh = await provider.read(ref)
        self._leases[key] = _Lease(ref.provider, fresh)
        if held is not None and held.secret.lease_id:
            await self._revoke_quietly(held)
        return fresh

    async def revoke(self, identity: str) -> int:
        """Drop and revoke every lease held for ``identity``; returns how many there were."""
        mine = [key for key in self._leases if key[0] == identity]
        dropped = [self._leases.pop(key) for key in mine]
        for lease in dropped:
            await self._revoke_quietly(lease)
        return len(dropped)

    async def aclose(self) -> None:
        """Revoke every lease (they are this replica's alone) and close the providers."""
        for identity in {who for who, _ in self._leases}:
            await self.revoke(identity)
        for provider in self._providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()

    async def _revoke_quietly(self, lease: _Lease) -> None:
        # Revocation is best effort: the lease ends on its own at its TTL, and the identity is already
        # cut off locally, so a provider that is down must not block the kill switch.
        if not lease.secret.lease_id:
            return
        try:
            await self._providers[lease.provider].revoke(lease.secret.lease_id)
        except RaygentError as exc:
            log.warning("could not revoke lease %s: %s", lease.secret.lease_id, exc.slug)
