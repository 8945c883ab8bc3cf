"""The pages under ``/ui/`` read with the approvals page's session cookie (safe methods only); the API
keeps needing a bearer token."""

from __future__ import annotations

from govkit import GovernedClient

from raygent.serve.auth import UI_SESSION_COOKIE

RUNS = "/v1/agents/support/runs"


def session(client: GovernedClient, sub: str, *roles: str) -> dict[str, str]:
    return {"cookie": f"{UI_SESSION_COOKIE}={client.token(sub, *roles, customer=sub)}"}


async def test_the_runs_pages_accept_the_signed_in_session(governed: GovernedClient) -> None:
    asked = await governed.http.post(
        RUNS, json={"input": "where is order 1004?"}, headers=governed.customer("C105")
    )
    run_id = asked.json()["run_id"]
    page = await governed.http.get("/ui/runs", headers=session(governed, "C105", "customer"))
    assert page.status_code == 200 and f"data-run='{run_id}'" in page.text
    detail = await governed.http.get(f"/ui/runs/{run_id}", headers=session(governed, "C105", "customer"))
    assert detail.status_code == 200
    # Another customer's session sees neither the run in the list nor its page.
    other = await governed.http.get("/ui/runs", headers=session(governed, "C106", "customer"))
    assert other.status_code == 200 and run_id not in other.text
    assert (
        await governed.http.get(f"/ui/runs/{run_id}", headers=session(governed, "C106", "customer"))
    ).status_code == 404


async def test_the_cookie_is_not_a_credential_for_the_api_or_for_unsafe_methods(
    governed: GovernedClient,
) -> None:
    cookie = session(governed, "C105", "customer")
    assert (await governed.http.get("/ui/runs")).status_code == 401
    assert (await governed.http.get("/v1/agents", headers=cookie)).status_code == 401
    refused = await governed.http.post(RUNS, json={"input": "refund order 1004"}, headers=cookie)
    assert refused.status_code == 401
    assert (await governed.store.list_runs()) == []
    tampered = {"cookie": f"{UI_SESSION_COOKIE}={governed.token('C105', 'customer', ttl_s=1)}x"}
    assert (await governed.http.get("/ui/runs", headers=tampered)).status_code == 401


async def test_the_approvals_page_sets_the_same_cookie() -> None:
    from raygent.serve import approvals

    assert approvals._SESSION_COOKIE == UI_SESSION_COOKIE
