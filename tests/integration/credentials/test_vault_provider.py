"""The Vault provider against the Vault HTTP API: KV v2 reads (a rotated secret is picked up at the next
call), leased secrets renewed before they end and revoked with the identity, and clear errors.

By default these run against the local server for the Vault API subset (examples/credentials/
devvault.py). With ``VAULT_ADDR`` and ``VAULT_TOKEN`` set they run against that real Vault instead
(``pytest -m vault``); the lease tests then need ``RAYGENT_VAULT_LEASE_PATH`` (a dynamic-secret path such
as ``database/creds/readonly``, whose data has a ``password``). See docs/issue-9.md.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import hvac
import pytest
from cred_stack import devvault, services

from raygent.core.credconfig import SecretRef, VaultSecretsSpec
from raygent.core.errors import ConfigError
from raygent.integrations.errors import SecretUnavailableError
from raygent.integrations.secrets.known import KnownSecrets
from raygent.integrations.secrets.resolver import SecretResolver
from raygent.integrations.secrets.vault import VaultProvider

pytestmark = [pytest.mark.integration, pytest.mark.vault]

REAL = bool(os.environ.get("VAULT_ADDR") and os.environ.get("VAULT_TOKEN"))


class ShiftClock:
    """Real time plus a shift the test controls (the lease's end as the gateway sees it)."""

    def __init__(self) -> None:
        self.shift_s = 0.0

    def now(self) -> float:
        return time.time() + self.shift_s

    def monotonic(self) -> float:
        return time.monotonic() + self.shift_s


@dataclass
class Target:
    url: str
    token: str
    dev: Any | None  # the DevVault when not against a real Vault
    lease_path: str | None

    def write(self, path: str, data: dict[str, str]) -> None:
        hvac.Client(url=self.url, token=self.token).secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, mount_point="secret"
        )


@pytest.fixture
def target() -> Iterator[Target]:
    if REAL:
        yield Target(
            os.environ["VAULT_ADDR"],
            os.environ["VAULT_TOKEN"],
            None,
            os.environ.get("RAYGENT_VAULT_LEASE_PATH"),
        )
        return
    dev = devvault.DevVault(token=f"t-{uuid.uuid4().hex}")
    dev.dynamic["database/creds/tickets"] = 30.0
    running = services.serve_in_thread(devvault.vault_app(dev))
    yield Target(running.url, dev.token, dev, "database/creds/tickets")
    running.stop()


@pytest.fixture
def clock() -> ShiftClock:
    return ShiftClock()


@pytest.fixture
async def provider(target: Target, clock: ShiftClock) -> AsyncIterator[VaultProvider]:
    spec = VaultSecretsSpec(kind="vault", url=target.url, renew_before_s=5, renew_increment_s=30)
    made = VaultProvider(spec, clock=clock, environ={"VAULT_TOKEN": target.token})
    yield made
    await made.aclose()


def lease_ref(target: Target) -> SecretRef:
    if target.lease_path is None:
        pytest.skip("set RAYGENT_VAULT_LEASE_PATH to a dynamic-secret path to test leases on a real Vault")
    return SecretRef(provider="vault", path=target.lease_path, key="password", lease=True)


async def test_kv_v2_read_and_rotation_is_picked_up_at_the_next_call(
    target: Target, provider: VaultProvider
) -> None:
    path = f"raygent-test/{uuid.uuid4().hex}"
    target.write(path, {"api_key": "first-value-123", "other": "x"})
    ref = SecretRef.model_validate(f"vault:{path}#api_key")
    known = KnownSecrets()
    resolver = SecretResolver({"vault": provider}, clock=ShiftClock(), known=known)
    assert await resolver.resolve(ref, identity="svc-a") == "first-value-123"
    target.write(path, {"api_key": "second-value-456"})
    assert await resolver.resolve(ref, identity="svc-a") == "second-value-456"
    # Both values are registered for masking: an old key echoed later is still a secret.
    assert known.scrub("a first-value-123 b second-value-456") == "a [REDACTED:secret] b [REDACTED:secret]"


async def test_kv_errors_are_clear_and_carry_no_token(target: Target, provider: VaultProvider) -> None:
    path = f"raygent-test/{uuid.uuid4().hex}"
    target.write(path, {"a": "1", "b": "2"})
    cases = {
        f"vault:{path}#missing": "has no key 'missing'",
        f"vault:{path}": "several keys",
        f"vault:raygent-test/absent-{uuid.uuid4().hex}": "Vault has nothing at this path",
    }
    for ref, message in cases.items():
        with pytest.raises(SecretUnavailableError) as info:
            await provider.read(SecretRef.model_validate(ref))
        assert message in info.value.detail and target.token not in info.value.detail
        assert not info.value.retryable
    wrong = VaultProvider(
        VaultSecretsSpec(kind="vault", url=target.url),
        clock=ShiftClock(),
        environ={"VAULT_TOKEN": "not-the-token"},
    )
    with pytest.raises(SecretUnavailableError, match="denied the gateway's token"):
        await wrong.read(SecretRef.model_validate(f"vault:{path}#a"))
    await wrong.aclose()


async def test_vault_down_is_retryable_and_a_missing_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="VAULT_TOKEN"):
        VaultProvider(
            VaultSecretsSpec(kind="vault", url="http://127.0.0.1:9"), clock=ShiftClock(), environ={}
        )
    down = VaultProvider(
        VaultSecretsSpec(kind="vault", url="http://127.0.0.1:9", timeout_s=1),
        clock=ShiftClock(),
        environ={"VAULT_TOKEN": "t"},
    )
    with pytest.raises(SecretUnavailableError, match="Vault is unavailable") as info:
        await down.read(SecretRef.model_validate("vault:any#k"))
    assert info.value.retryable
    await down.aclose()


async def test_leased_secret_is_renewed_before_it_ends_and_revoked_with_the_identity(
    target: Target, provider: VaultProvider, clock: ShiftClock
) -> None:
    ref = lease_ref(target)
    known = KnownSecrets()
    resolver = SecretResolver({"vault": provider}, clock=clock, known=known, renew_before_s={"vault": 5})
    first = await resolver.resolve(ref, identity="svc-a")
    (lease_id,) = resolver.leases("svc-a")
    assert await resolver.resolve(ref, identity="svc-a") == first  # held, not read again
    # Another identity gets its own lease: revoking one never touches the other's.
    other = await resolver.resolve(ref, identity="svc-b")
    assert other != first and len(resolver.leases("svc-b")) == 1
    # As the gateway sees it, the lease is now within renew_before_s of its end: it is renewed.
    clock.shift_s = 27.0 if target.dev is not None else 0.0
    if target.dev is not None:
        assert await resolver.resolve(ref, identity="svc-a") == first
        assert target.dev.leases[lease_id].renewals == 1
    assert resolver.leases("svc-a") == [lease_id]
    assert await resolver.revoke("svc-a") == 1
    assert resolver.leases("svc-a") == [] and len(resolver.leases("svc-b")) == 1
    if target.dev is not None:
        assert target.dev.leases[lease_id].revoked
        assert not target.dev.leases[resolver.leases("svc-b")[0]].revoked
    else:
        with pytest.raises(hvac.exceptions.InvalidRequest):
            hvac.Client(url=target.url, token=target.token).sys.read_lease(lease_id)
    # The next call for the revoked identity (once allowed again) reads a new lease.
    fresh = await resolver.resolve(ref, identity="svc-a")
    assert fresh != first and resolver.leases("svc-a") != [lease_id]
    await resolver.aclose()


async def test_lease_that_cannot_be_renewed_is_replaced(
    target: Target, provider: VaultProvider, clock: ShiftClock
) -> None:
    if target.dev is None:
        pytest.skip("needs the local Vault API server to expire a lease on demand")
    ref = lease_ref(target)
    resolver = SecretResolver(
        {"vault": provider}, clock=clock, known=KnownSecrets(), renew_before_s={"vault": 5}
    )
    first = await resolver.resolve(ref, identity="svc-a")
    (old,) = resolver.leases("svc-a")
    target.dev.leases[old].expires_at = 0  # Vault ended it (max TTL reached): renewal is refused
    clock.shift_s = 40.0
    assert await resolver.resolve(ref, identity="svc-a") != first
    assert resolver.leases("svc-a") != [old]
    await resolver.aclose()
