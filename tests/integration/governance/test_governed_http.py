"""The governed example over real HTTP on Ray Serve: tokens, each refund rule end to end, approvals
parked across a Serve restart, four-eyes, and the kill switch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from conftest import GovernedServe
from joserfc import jwt

from raygent.core.store import open_store
from raygent.core.store.base import AuditQuery

pytestmark = pytest.mark.integration


@pytest.fixture
def client(governed_serve: GovernedServe) -> httpx.Client:
    governed_serve.reset_spending()
    return httpx.Client(base_url=governed_serve.base_url, timeout=120)


def ask(client: httpx.Client, g: GovernedServe, customer: str, text: str) -> httpx.Response:
    return client.post(
        "/v1/agents/support/runs",
        json={"input": text},
        headers=g.auth(customer, "customer", customer=customer),
    )


def audit(g: GovernedServe, **filters: Any) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = open_store(g.fleet)
        try:
            return [r.to_dict() for r in await store.query_audit(AuditQuery(limit=100_000, **filters))]
        finally:
            await store.close()

    return asyncio.run(read())


def test_bad_tokens_are_refused_and_audited(client: httpx.Client, governed_serve: GovernedServe) -> None:
    now_refused = len([r for r in audit(governed_serve, kind="error") if r["payload"].get("stage") == "auth"])
    issuer = governed_serve.issuer
    now = int(time.time())
    claims = {
        "iss": "raygent-local",
        "aud": "support-desk",
        "sub": "C105",
        "exp": now - 3600,
        "role": ["customer"],
    }
    expired = jwt.encode({"alg": "Ed25519", "kid": issuer.kid}, claims, issuer._key, algorithms=["Ed25519"])
    bad = {
        "none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJDMTA1In0.",
        "expired": expired,
        "missing": None,
    }
    for name, token in bad.items():
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = client.post("/v1/agents/support/runs", json={"input": "hi"}, headers=headers)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    cross = client.post(
        "/v1/agents/refunds/runs",
        json={"input": "refund order 1004"},
        headers=governed_serve.auth("svc-orders@acme", "orders-agent"),
    )
    assert cross.status_code == 403
    refused = [
        r["payload"] for r in audit(governed_serve, kind="error") if r["payload"].get("stage") == "auth"
    ]
    assert len(refused) - now_refused == 4
    assert [r["status"] for r in refused[-4:]] == [401, 401, 401, 403]


def test_each_refund_rule_end_to_end(client: httpx.Client, governed_serve: GovernedServe) -> None:
    g = governed_serve
    before = len(g.ledger())
    auto = ask(client, g, "C105", "refund order 1004, it arrived broken")
    assert auto.status_code == 200 and "of $183.14 for order 1004 has been issued" in auto.json()["output"]
    never_bought = ask(client, g, "C105", "refund $2300 for the laptop on order 1004").json()["output"]
    assert "never bought this item" in never_bought
    foreign = ask(client, g, "C105", "refund order 1042, it arrived broken").json()["output"]
    assert "another customer" in foreign
    assert len(g.ledger()) == before + 1
    denials = [r["payload"] for r in audit(g, kind="policy_decision") if r["payload"]["stage"] == "policy"]
    assert any("the customer never bought this item on this order" in d["reasons"] for d in denials)


def test_more_than_1000_a_day_is_denied(client: httpx.Client, governed_serve: GovernedServe) -> None:
    g = governed_serve
    outputs = [
        ask(client, g, "C105", "refund order 1004, it arrived broken").json()["output"] for _ in range(6)
    ]
    assert all("has been issued" in o for o in outputs[:5]), outputs
    assert "daily limit of $1000.00" in outputs[5]


def approve(client: httpx.Client, g: GovernedServe, approval_id: str, who: str) -> dict[str, Any]:
    response = client.post(f"/v1/approvals/{approval_id}", json={"decision": "approve", "reason": "checked"},
                           headers=g.auth(who, "approver"))  # fmt: skip
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_approval_parks_across_a_serve_restart(client: httpx.Client, governed_serve: GovernedServe) -> None:
    g = governed_serve
    held = ask(client, g, "C107", "refund order 1080, it arrived broken")
    assert held.status_code == 202, held.text
    run_id, approval_id = held.json()["run_id"], held.json()["approval_id"]
    g.restart()  # every replica of the application is replaced; the run waits in durable state
    status = client.get(f"/v1/runs/{run_id}", headers=g.auth("C107", "customer", customer="C107"))
    assert status.json()["status"] == "needs_approval"
    body = approve(client, g, approval_id, "alice")
    assert body["approval"]["status"] == "approved"
    assert (
        body["run"]["status"] == "completed"
        and "of $299.38 for order 1080 has been issued" in body["run"]["output"]
    )
    assert [row[:2] for row in g.ledger() if row[2].startswith(run_id)] == [("1080", 299.38)]


def test_four_eyes_over_http(client: httpx.Client, governed_serve: GovernedServe) -> None:
    g = governed_serve
    held = ask(client, g, "C111", "refund order 1084, it arrived damaged").json()
    first = approve(client, g, held["approval_id"], "alice")
    assert first["approval"]["status"] == "pending" and first["run"] is None
    twice = client.post(
        f"/v1/approvals/{held['approval_id']}",
        json={"decision": "approve"},
        headers=g.auth("alice", "approver"),
    )
    assert twice.status_code == 409
    second = approve(client, g, held["approval_id"], "carol")
    assert second["run"]["status"] == "completed"


def test_kill_switch_over_http(client: httpx.Client, governed_serve: GovernedServe) -> None:
    g = governed_serve
    admin = g.auth("root", "admin")
    assert (
        client.post("/v1/identities/refunds/revoke", json={"reason": "drill"}, headers=admin).status_code
        == 200
    )
    try:
        assert "revoked" in ask(client, g, "C105", "refund order 1004, it arrived broken").json()["output"]
        assert client.post("/v1/agents/refunds/runs", json={"input": "x"}, headers=admin).status_code == 403
    finally:
        client.post("/v1/identities/refunds/restore", headers=admin)
    assert (
        "has been issued" in ask(client, g, "C105", "refund order 1004, it arrived broken").json()["output"]
    )


def settled(client: httpx.Client, run_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """Poll an async run until it leaves queued/running (bounded; no timing is asserted)."""
    body: dict[str, Any] = {}
    for _ in range(600):
        body = client.get(f"/v1/runs/{run_id}", headers=headers).json()
        if body.get("status") not in ("queued", "running"):
            break
        time.sleep(0.2)
    return body


def test_async_runs_carry_the_caller_and_runs_belong_to_it(
    client: httpx.Client, governed_serve: GovernedServe
) -> None:
    g = governed_serve
    c105, c106 = (g.auth(c, "customer", customer=c) for c in ("C105", "C106"))
    auto = client.post(
        "/v1/agents/support/runs",
        json={"input": "refund order 1004, it arrived broken", "mode": "async"},
        headers=c105,
    )
    assert auto.status_code == 202, auto.text
    run_id = auto.json()["run_id"]
    done = settled(client, run_id, c105)
    assert done["status"] == "completed" and "of $183.14 for order 1004 has been issued" in done["output"]
    assert done["requester"] == "C105" and done["mode"] == "async"
    # Someone else's run answers exactly like a run that does not exist; the auditor reads every run.
    foreign, missing = (client.get(f"/v1/runs/{rid}", headers=c106) for rid in (run_id, "run_nope"))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["detail"] == f"there is no run {run_id!r}"
    assert client.get(f"/v1/runs/{run_id}", headers=g.auth("erin", "auditor")).status_code == 200
    # Over $200, started asynchronously: parked for approval like a sync run.
    c107 = g.auth("C107", "customer", customer="C107")
    held = client.post(
        "/v1/agents/support/runs",
        json={"input": "refund order 1080, it arrived broken", "mode": "async"},
        headers=c107,
    )
    assert held.status_code == 202, held.text
    assert settled(client, held.json()["run_id"], c107)["status"] == "needs_approval"
    # One idempotency key, two callers: two runs, no replay across them.
    key = {"Idempotency-Key": f"shared-{run_id}"}
    first = client.post(
        "/v1/agents/support/runs", json={"input": "where is order 1004?"}, headers={**c105, **key}
    )
    other = client.post(
        "/v1/agents/support/runs", json={"input": "where is order 1004?"}, headers={**c106, **key}
    )
    assert first.status_code == other.status_code == 200
    assert "idempotent-replayed" not in other.headers and other.json()["run_id"] != first.json()["run_id"]
