"""Secrets from the gateway's environment and from files beside the fleet."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from raygent.core.credconfig import EnvSecretsSpec, FileSecretsSpec, SecretRef
from raygent.integrations.errors import SecretUnavailableError
from raygent.integrations.secrets.base import SecretValue, pick_key

__all__ = ["EnvProvider", "FileProvider"]


class _NoLeases:
    async def renew(self, lease_id: str) -> float:
        raise SecretUnavailableError("this secrets provider has no leases")

    async def revoke(self, lease_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


class EnvProvider(_NoLeases):
    """``env:NAME`` reads ``$PREFIXNAME`` from this process's environment (read at call time)."""

    def __init__(self, spec: EnvSecretsSpec, *, environ: Mapping[str, str] | None = None) -> None:
        self._prefix = spec.prefix
        self._environ = os.environ if environ is None else environ

    async def read(self, ref: SecretRef) -> SecretValue:
        name = self._prefix + ref.path
        value = self._environ.get(name)
        if not value:
            raise SecretUnavailableError(f"secret {ref}: the environment variable {name} is not set")
        return SecretValue(pick_key(ref, value))


class FileProvider(_NoLeases):
    """``files:name`` reads ``dir/name`` (one secret per file; ``#key`` reads a JSON object's key)."""

    def __init__(self, spec: FileSecretsSpec, *, base_dir: Path) -> None:
        root = Path(spec.dir)
        self._root = (root if root.is_absolute() else base_dir / root).resolve()

    async def read(self, ref: SecretRef) -> SecretValue:
        path = (self._root / ref.path).resolve()
        if not path.is_relative_to(self._root):
            raise SecretUnavailableError(f"secret {ref}: the path leaves the secrets directory")
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except FileNotFoundError:
            raise SecretUnavailableError(f"secret {ref}: no such file in the secrets directory") from None
        except OSError as exc:
            raise SecretUnavailableError(f"secret {ref}: cannot read it ({exc.strerror})") from None
        return SecretValue(pick_key(ref, text.strip()))
