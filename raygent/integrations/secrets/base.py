"""What a secrets provider is: something that reads a reference and, for leased secrets, renews and
revokes leases."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from raygent.core.credconfig import SecretRef
from raygent.integrations.errors import SecretUnavailableError

__all__ = ["SecretProvider", "SecretValue", "pick_key"]


@dataclass(frozen=True, slots=True)
class SecretValue:
    """A resolved secret. ``lease_id`` and ``expires_at`` (epoch seconds) are set for leased secrets."""

    value: str
    lease_id: str | None = None
    expires_at: float | None = None
    renewable: bool = False

    def __repr__(self) -> str:  # a secret never reaches a log line through its repr
        return f"SecretValue(lease_id={self.lease_id!r}, expires_at={self.expires_at!r})"


class SecretProvider(Protocol):
    async def read(self, ref: SecretRef) -> SecretValue:
        """Read the secret now.

        Raises:
            SecretUnavailableError: Missing, denied, or the provider is down (``retryable`` says which).
        """
        ...

    async def renew(self, lease_id: str) -> float:
        """Extend a lease; returns its new duration in seconds."""
        ...

    async def revoke(self, lease_id: str) -> None: ...

    async def aclose(self) -> None: ...


def pick_key(ref: SecretRef, data: Any) -> str:
    """The string a reference names inside ``data`` (a mapping, or a JSON object in a string).

    Without ``#key``, a string is the secret and a mapping must hold exactly one value.
    """
    if isinstance(data, str) and ref.key is not None:
        try:
            data = json.loads(data)
        except ValueError:
            raise SecretUnavailableError(f"secret {ref} is not a JSON object, so it has no key") from None
    if isinstance(data, str):
        return data
    if not isinstance(data, Mapping):
        raise SecretUnavailableError(f"secret {ref} is not a string or an object")
    if ref.key is None:
        if len(data) != 1:
            raise SecretUnavailableError(f"secret {ref} has several keys: name one with '#key'")
        (value,) = data.values()
    elif ref.key in data:
        value = data[ref.key]
    else:
        raise SecretUnavailableError(f"secret {ref} has no key {ref.key!r}")
    if not isinstance(value, str) or not value:
        raise SecretUnavailableError(f"secret {ref} is empty or not a string")
    return value
