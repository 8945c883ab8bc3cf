"""HashiCorp Vault over its HTTP API (hvac): KV v2 reads, and leased (dynamic) secrets with renewal.

hvac is synchronous, so every request runs on a worker thread. The Vault token is read from the gateway
process's environment when the provider is built; no error message ever carries it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from raygent.core.clock import Clock
from raygent.core.credconfig import SecretRef, VaultSecretsSpec
from raygent.core.errors import ConfigError
from raygent.integrations.errors import SecretUnavailableError
from raygent.integrations.secrets.base import SecretValue, pick_key

__all__ = ["VaultProvider"]

T = TypeVar("T")


class VaultProvider:
    """Reads ``vault:path#key`` from the KV v2 engine at ``kv_mount``; with ``lease: true``, reads
    ``path`` as a dynamic secret (``database/creds/role``) and reports its lease.

    Args:
        spec: The provider's settings.
        clock: Wall clock for lease expiry.
        environ: Where ``VAULT_ADDR`` and the token variable are read (default: the process's).
    """

    def __init__(
        self, spec: VaultSecretsSpec, *, clock: Clock, environ: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        url = spec.url or env.get("VAULT_ADDR")
        if not url:
            raise ConfigError("the vault secrets provider needs 'url' or $VAULT_ADDR")
        token = env.get(spec.token_env)
        if not token:
            raise ConfigError(f"the vault secrets provider needs a token in ${spec.token_env}")
        self._spec = spec
        self._clock = clock
        self._client = hvac.Client(
            url=url, token=token, namespace=spec.namespace, timeout=spec.timeout_s, verify=spec.verify_tls
        )
        self._kv_cache: dict[str, tuple[float, Any]] = {}

    async def read(self, ref: SecretRef) -> SecretValue:
        if ref.lease:
            return await self._read_leased(ref)
        return SecretValue(pick_key(ref, await self._read_kv(ref)))

    async def _read_kv(self, ref: SecretRef) -> Any:
        now = self._clock.monotonic()
        cached = self._kv_cache.get(ref.path)
        if cached is not None and cached[0] > now:
            return cached[1]
        kv = self._client.secrets.kv.v2
        resp = await self._call(
            ref,
            lambda: kv.read_secret_version(
                path=ref.path, mount_point=self._spec.kv_mount, raise_on_deleted_version=True
            ),
        )
        data = ((resp or {}).get("data") or {}).get("data")
        if data is None:
            raise SecretUnavailableError(f"secret {ref}: Vault returned no data")
        if self._spec.kv_cache_s > 0:
            self._kv_cache[ref.path] = (now + self._spec.kv_cache_s, data)
        return data

    async def _read_leased(self, ref: SecretRef) -> SecretValue:
        resp = await self._call(ref, lambda: self._client.read(ref.path))
        if not resp:
            raise SecretUnavailableError(f"secret {ref}: Vault has nothing at this path")
        lease_id = resp.get("lease_id") or None
        duration = float(resp.get("lease_duration") or 0)
        value = pick_key(ref, resp.get("data") or {})
        expires_at = self._clock.now() + duration if lease_id and duration > 0 else None
        return SecretValue(value, lease_id, expires_at, bool(resp.get("renewable")))

    async def renew(self, lease_id: str) -> float:
        sys = self._client.sys
        inc = self._spec.renew_increment_s
        resp = await self._call(None, lambda: sys.renew_lease(lease_id=lease_id, increment=inc))
        return float((resp or {}).get("lease_duration") or 0)

    async def revoke(self, lease_id: str) -> None:
        sys = self._client.sys
        await self._call(None, lambda: sys.revoke_lease(lease_id=lease_id))

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.adapter.close)

    async def _call(self, ref: SecretRef | None, fn: Callable[[], T]) -> T:
        what = f"secret {ref}" if ref is not None else "lease"
        try:
            return await asyncio.to_thread(fn)
        except hvac.exceptions.InvalidPath:
            raise SecretUnavailableError(f"{what}: Vault has nothing at this path") from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            raise SecretUnavailableError(f"{what}: Vault denied the gateway's token access") from None
        except hvac.exceptions.InvalidRequest as exc:
            raise SecretUnavailableError(f"{what}: Vault refused the request ({_first(exc)})") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            detail = f"{what}: Vault is unavailable ({type(exc).__name__})"
            raise SecretUnavailableError(detail, retryable=True) from None


def _first(exc: hvac.exceptions.VaultError) -> str:
    errors = getattr(exc, "errors", None) or []
    return str(errors[0])[:200] if errors else "no reason given"
