"""Tenants come from the token (``auth.tenant_claim``): rate limits, idempotency scopes and callback
secrets are per tenant; a tenant claim that is not a plain name is a 401."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from govkit import MovableClock
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.config import Fleet, RateLimitSpec
from raygent.core.errors import ConfigError
from raygent.core.store import open_store
from raygent.governance.auth import LocalIssuer
from raygent.serve.agents import LocalAgentPort
from raygent.serve.api import ApiService, build_api
from raygent.serve.auth import governed_api


@pytest.fixture
async def api(
    governed_fleet: Fleet, clock: MovableClock
) -> AsyncIterator[tuple[httpx.AsyncClient, LocalIssuer]]:
    # One request per second per tenant, at most one at once: the second request of a tenant is refused.
    server = governed_fleet.server.model_copy(
        update={"rate_limit": RateLimitSpec(requests_per_s=0.001, burst=1, per="tenant")}
    )
    fleet = governed_fleet.model_copy(update={"server": server})
    store = open_store(fleet)
    tracer = TracerProvider().get_tracer("tenants")
    port = LocalAgentPort(fleet, store=store, tracer=tracer, clock=clock)
    service = ApiService(fleet, store=store, agents=port, clock=clock, tracer=tracer)
    app = build_api(service)
    gov = governed_api(service)
    assert gov is not None and isinstance(gov.issuer, LocalIssuer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http, gov.issuer
    await port.aclose()
    await store.close()


def bearer(issuer: LocalIssuer, sub: str, tenant: str | None) -> dict[str, str]:
    token = issuer.issue(subject=sub, roles=["customer"], ttl_s=600, end_user=sub, tenant=tenant)
    return {"authorization": f"Bearer {token}"}


async def test_rate_limits_are_per_tenant_from_the_token(api: tuple[httpx.AsyncClient, LocalIssuer]) -> None:
    http, issuer = api

    async def ask(sub: str, tenant: str | None) -> int:
        resp = await http.post(
            "/v1/agents/support/runs", json={"input": "hello"}, headers=bearer(issuer, sub, tenant)
        )
        return resp.status_code

    assert await ask("C101", "acme") == 200
    assert await ask("C102", "acme") == 429  # another caller of the same tenant: the tenant's bucket
    assert await ask("C103", "globex") == 200  # another tenant has its own
    assert await ask("C104", None) == 200  # no claim: tenant 'default'
    assert await ask("C105", None) == 429


@pytest.mark.parametrize("bad", ["../etc", "a b", "x" * 65, ""])
async def test_a_tenant_claim_that_is_not_a_name_is_401(
    api: tuple[httpx.AsyncClient, LocalIssuer], bad: str
) -> None:
    http, issuer = api
    token = issuer.issue(subject="C101", roles=["customer"], ttl_s=600, extra={"tenant": bad})
    resp = await http.get("/v1/agents", headers={"authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and "tenant" in resp.json()["detail"]
    with pytest.raises(ConfigError):
        issuer.issue(subject="C101", roles=["customer"], ttl_s=600, tenant=bad)


def test_the_cli_issues_tenant_tokens(tmp_path: Path) -> None:
    import subprocess
    import sys

    governed = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "governed.yaml"
    raygent = str(Path(sys.executable).parent / "raygent")
    done = subprocess.run(
        [raygent, "token", "issue", "-f", str(governed), "--state-dir", str(tmp_path), "--role", "customer",
         "--sub", "C101", "--tenant", "acme"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = done.stdout.strip().split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["tenant"] == "acme" and claims["sub"] == "C101"
    bad = subprocess.run(
        [raygent, "token", "issue", "-f", str(governed), "--state-dir", str(tmp_path), "--role", "customer",
         "--sub", "C101", "--tenant", "no/slashes"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "tenant" in bad.stderr and "Traceback" not in bad.stderr
