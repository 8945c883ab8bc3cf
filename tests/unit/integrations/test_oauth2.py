"""The OAuth2 token cache against the example's token endpoint (ASGI, through authlib's HTTP library):
renewal before expiry by the skew, one request for concurrent callers, scopes, refused clients."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from raygent.core.credconfig import EnvSecretsSpec, OAuth2ClientSpec, SecretRef
from raygent.integrations.errors import CredentialError, InsufficientScopeError, TokenEndpointError
from raygent.integrations.oauth2 import OAuth2Tokens, token_http
from raygent.integrations.secrets.known import KnownSecrets
from raygent.integrations.secrets.local import EnvProvider
from raygent.integrations.secrets.resolver import SecretResolver

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "credentials"


def _services() -> ModuleType:
    name = "cred_example_services"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE / "services.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


services = _services()


class StepClock:
    def __init__(self) -> None:
        self.t = time.time()

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


@pytest.fixture
def auth() -> Any:
    return services.AuthServer(
        clients={"agent-a": services.Client("sekret-value-1", frozenset({"r", "w"}))},
        users={},
        signing_key="k" * 32,
        assertion_key="a" * 32,
        ttl_s=10,
    )


def tokens(auth: Any, clock: StepClock, *, secret: str = "sekret-value-1") -> OAuth2Tokens:
    known = KnownSecrets()
    env = EnvProvider(EnvSecretsSpec(kind="env"), environ={"CLIENT_SECRET": secret})
    resolver = SecretResolver({"env": env}, clock=clock, known=known)
    spec = OAuth2ClientSpec(
        token_url="http://auth.test/oauth/token",
        client_id="agent-a",
        client_secret=SecretRef.model_validate("env:CLIENT_SECRET"),
        expiry_skew_s=2,
        auth_method="client_secret_post",
    )
    transport = token_http.ASGITransport(app=services.auth_app(auth))
    return OAuth2Tokens({"svc-a": spec}, secrets=resolver, clock=clock, known=known, transport=transport)


async def test_a_token_is_reused_until_the_skew_then_renewed(auth: Any) -> None:
    clock = StepClock()
    cache = tokens(auth, clock)
    first = await cache.token("svc-a", ["r"])
    assert first.scopes == {"r"} and first.expires_at == pytest.approx(clock.t + 10)
    clock.t += 7.9  # 2.1 s left: more than the skew
    assert (await cache.token("svc-a", ["r"])).value == first.value
    clock.t += 0.2  # 1.9 s left: inside the skew, renewed before use
    second = await cache.token("svc-a", ["r"])
    assert second.value != first.value and cache.fetches == 2
    # Another scope set is another token; dropping the identity forgets both.
    await cache.token("svc-a", ["w"])
    assert cache.drop("svc-a") == 2 and cache.cached("svc-a") == []
    await cache.aclose()


async def test_concurrent_callers_share_one_request(auth: Any) -> None:
    cache = tokens(auth, StepClock())
    got = await asyncio.gather(*(cache.token("svc-a", ["r", "w"]) for _ in range(20)))
    assert len({t.value for t in got}) == 1 and cache.fetches == 1 and len(auth.issued) == 1
    await cache.aclose()


async def test_refusals_are_clear_errors(auth: Any) -> None:
    cache = tokens(auth, StepClock())
    with pytest.raises(InsufficientScopeError, match=r"refused scopes \['admin'\]"):
        await cache.token("svc-a", ["admin"])
    with pytest.raises(CredentialError, match="no OAuth2 client"):
        await cache.token("svc-unknown", ["r"])
    with pytest.raises(CredentialError, match="no token_exchange"):
        await cache.token("svc-a", ["r"], end_user="alice")
    await cache.aclose()
    wrong = tokens(auth, StepClock(), secret="not-the-secret")
    with pytest.raises(TokenEndpointError, match="invalid_client") as refused:
        await wrong.token("svc-a", ["r"])
    assert not refused.value.retryable and "not-the-secret" not in refused.value.detail
    await wrong.aclose()
