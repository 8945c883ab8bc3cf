"""The environment and file secrets providers, and the resolver's registration of what it read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raygent.core.clock import SystemClock
from raygent.core.credconfig import EnvSecretsSpec, FileSecretsSpec, SecretRef
from raygent.integrations.errors import SecretUnavailableError
from raygent.integrations.secrets import KnownSecrets, SecretResolver
from raygent.integrations.secrets.local import EnvProvider, FileProvider


def ref(text: str) -> SecretRef:
    return SecretRef.model_validate(text)


async def test_env_provider_reads_prefixed_variables_at_call_time() -> None:
    environ = {"APP_TOKEN": "env-secret-value", "APP_JSON": json.dumps({"k": "from-json"})}
    env = EnvProvider(EnvSecretsSpec(kind="env", prefix="APP_"), environ=environ)
    assert (await env.read(ref("env:TOKEN"))).value == "env-secret-value"
    assert (await env.read(ref("env:JSON#k"))).value == "from-json"
    environ["APP_TOKEN"] = "rotated-value-2"
    assert (await env.read(ref("env:TOKEN"))).value == "rotated-value-2"
    with pytest.raises(SecretUnavailableError, match="APP_MISSING is not set"):
        await env.read(ref("env:MISSING"))


async def test_file_provider_stays_inside_its_directory(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "key").write_text("file-secret-value\n")
    (tmp_path / "outside").write_text("not yours")
    files = FileProvider(FileSecretsSpec(kind="file", dir="s"), base_dir=tmp_path)
    assert (await files.read(ref("files:key"))).value == "file-secret-value"
    with pytest.raises(SecretUnavailableError, match="leaves the secrets directory"):
        await files.read(ref("files:../outside"))
    with pytest.raises(SecretUnavailableError, match="no such file"):
        await files.read(ref("files:absent"))
    with pytest.raises(SecretUnavailableError, match="not a JSON object"):
        await files.read(ref("files:key#k"))


async def test_resolver_registers_values_and_refuses_unknown_providers() -> None:
    known = KnownSecrets()
    env = EnvProvider(EnvSecretsSpec(kind="env"), environ={"K": "registered-secret"})
    resolver = SecretResolver({"env": env}, clock=SystemClock(), known=known)
    assert await resolver.resolve(ref("env:K"), identity="svc-a") == "registered-secret"
    assert "registered-secret" in known
    with pytest.raises(SecretUnavailableError, match="no secrets provider named 'vault'"):
        await resolver.resolve(ref("vault:x"), identity="svc-a")
    assert repr(await env.read(ref("env:K"))).find("registered-secret") == -1
