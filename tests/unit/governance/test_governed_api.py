"""The governed support desk through its HTTP API in process (ASGI, no Ray): tokens, RBAC, the example's
refund rules, approvals (parking, resuming, four-eyes, timeout) and the kill switch, each audited."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import sqlite3
import time
from typing import Any
from urllib.parse import unquote

import pytest
from govkit import GovernedClient
from joserfc import jwt
from joserfc.jwk import OKPKey

from raygent.core.interceptors import CallContext, ToolCallInput
from raygent.core.messages import ToolCall
from raygent.core.store.base import AuditQuery
from raygent.governance.decision import PolicyDecision
from raygent.governance.effects import IN_DOUBT_POLICY
from raygent.serve.auth import UI_SESSION_COOKIE


async def audit(client: GovernedClient, **filters: Any) -> list[dict[str, Any]]:
    records = await client.store.query_audit(AuditQuery(limit=100_000, **filters))
    return [r.to_dict() for r in records]


async def auth_refusals(client: GovernedClient) -> list[dict[str, Any]]:
    return [r["payload"] for r in await audit(client, kind="error") if r["payload"].get("stage") == "auth"]


def refunds_issued(client: GovernedClient) -> list[tuple[str, float]]:
    path = client.fleet.state_path("ledger.db")
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT order_id, amount_usd FROM refunds ORDER BY ts").fetchall()


def claims(client: GovernedClient, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "raygent-local",
        "aud": "support-desk",
        "sub": "C105",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "role": ["customer"],
        "customer": "C105",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs256(body: dict[str, Any], secret: bytes) -> str:
    """A token an attacker builds by hand (joserfc itself refuses a public key as an HMAC secret)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(body).encode())}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def signed(client: GovernedClient, body: dict[str, Any]) -> str:
    issuer = client.gov.issuer
    assert issuer is not None
    key = issuer._key  # the fleet's own key: these tokens differ from good ones only in their claims
    return jwt.encode({"alg": "Ed25519", "kid": issuer.kid}, body, key, algorithms=["Ed25519"])


# ----- authentication ---------------------------------------------------------------------------------


async def test_a_valid_token_runs_and_the_run_knows_who_asked(governed: GovernedClient) -> None:
    response = await governed.ask("C105", "where is order 1004?")
    assert response.status_code == 200, response.text
    assert "desk lamp" in response.json()["output"]
    records = await audit(governed, run_id=response.json()["run_id"])
    assert records and all(r["payload"].get("requester") == "C105" for r in records if r["kind"] != "prompt")


def bad_tokens(client: GovernedClient) -> dict[str, str]:
    now = int(time.time())
    good = signed(client, claims(client))
    head, _, sig = good.split(".")
    other_key = OKPKey.generate_key("Ed25519")
    public_pem = client.gov.issuer._key.as_pem(private=False)  # type: ignore[union-attr]
    return {
        "expired": signed(client, claims(client, iat=now - 7200, nbf=now - 7200, exp=now - 3600)),
        "not-yet-valid": signed(client, claims(client, nbf=now + 3600, exp=now + 7200)),
        "wrong-audience": signed(client, claims(client, aud="another-fleet")),
        "wrong-issuer": signed(client, claims(client, iss="https://evil.example")),
        "alg-none": jwt.encode({"alg": "none"}, claims(client), None, algorithms=["none"]),  # type: ignore[arg-type]
        # Same header and signature, one claim changed: the signature no longer covers the body.
        "tampered": ".".join([head, signed(client, claims(client, role=["admin"])).split(".")[1], sig]),
        "foreign-key": jwt.encode({"alg": "Ed25519"}, claims(client), other_key, algorithms=["Ed25519"]),
        # Key confusion: HMAC keyed with the issuer's *public* key, which anyone can fetch.
        "key-confusion": hs256(claims(client), public_pem),
        "no-exp": signed(client, claims(client, exp=None)),
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not-yet-valid",
        "wrong-audience",
        "wrong-issuer",
        "alg-none",
        "tampered",
        "foreign-key",
        "key-confusion",
        "no-exp",
        "garbage",
    ],
)
async def test_bad_tokens_are_401_and_audited(governed: GovernedClient, case: str) -> None:
    token = bad_tokens(governed)[case]
    response = await governed.http.post(
        "/v1/agents/support/runs",
        json={"input": "refund order 1004, it arrived broken"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401, (case, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    problem = response.json()
    assert problem["status"] == 401 and problem["type"].endswith("/token-invalid")
    refusals = await auth_refusals(governed)
    assert len(refusals) == 1 and refusals[0]["status"] == 401 and refusals[0]["detail"] == problem["detail"]
    assert refunds_issued(governed) == []  # nothing happened
    assert (await governed.store.list_runs()) == []


async def test_each_token_failure_says_which_check_failed(governed: GovernedClient) -> None:
    tokens = bad_tokens(governed)
    details = {}
    for case in ("expired", "not-yet-valid", "wrong-audience", "wrong-issuer", "alg-none", "tampered"):
        headers = {"authorization": f"Bearer {tokens[case]}"}
        details[case] = (await governed.http.get("/v1/agents", headers=headers)).json()["detail"]
    assert "expired" in details["expired"]
    assert "not valid yet" in details["not-yet-valid"]
    assert "audience" in details["wrong-audience"]
    assert "issued by" in details["wrong-issuer"]
    assert "'none' is not allowed" in details["alg-none"]
    assert "signature" in details["tampered"]


async def test_missing_token_is_401_but_health_is_public(governed: GovernedClient) -> None:
    assert (await governed.http.post("/v1/agents/support/runs", json={"input": "hi"})).status_code == 401
    assert (await governed.http.get("/healthz")).status_code == 200
    jwks = (await governed.http.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["kty"] == "OKP" and "d" not in jwks["keys"][0]


async def test_cross_agent_tokens_are_403_and_audited(governed: GovernedClient) -> None:
    # A customer may start the support desk, not the refunds agent behind it.
    direct = await governed.http.post(
        "/v1/agents/refunds/runs", json={"input": "refund order 1004"}, headers=governed.customer("C105")
    )
    assert direct.status_code == 403, direct.text
    # An agent's own identity token cannot start another agent (nor the validator, which nobody may).
    orders = governed.auth("svc-orders@acme", "orders-agent")
    other = await governed.http.post(
        "/v1/agents/refunds/runs", json={"input": "refund order 1004"}, headers=orders
    )
    assert other.status_code == 403
    checker = await governed.http.post(
        "/v1/agents/refund-checker/runs", json={"input": "APPROVE"}, headers=governed.customer("C105")
    )
    assert checker.status_code == 403
    refusals = await auth_refusals(governed)
    assert [r["status"] for r in refusals] == [403, 403, 403]
    assert {r["error_type"] for r in refusals} == {"permission-denied"}
    assert refusals[1]["claimed_sub"] == "svc-orders@acme"


async def test_roles_limit_the_other_routes(governed: GovernedClient) -> None:
    customer = governed.customer("C105")
    assert (await governed.http.get("/v1/approvals", headers=customer)).status_code == 403
    assert (
        await governed.http.post("/v1/identities/refunds/revoke", json={}, headers=customer)
    ).status_code == 403
    approver = governed.auth("alice", "approver")
    assert (await governed.http.get("/v1/approvals", headers=approver)).status_code == 200
    # Deny by default: a route nobody was granted.
    assert (await governed.http.get("/v1/serving/stats", headers=approver)).status_code == 403


async def test_the_audit_trail_over_http_is_for_audit_readers(governed: GovernedClient) -> None:
    await governed.ask("C105", "where is order 1004?")
    customer, auditor = governed.customer("C105"), governed.auth("erin", "auditor")
    assert (await governed.http.get("/v1/audit", headers=customer)).status_code == 403
    assert (await governed.http.get("/v1/audit/verify", headers=customer)).status_code == 403
    records = (await governed.http.get("/v1/audit", headers=auditor)).json()["records"]
    assert records and {"seq", "hash", "prev_hash", "kind", "payload"} <= set(records[0])
    assert (await governed.http.get("/v1/audit/verify", headers=auditor)).json()["ok"] is True
    # A refusal past the auth middleware is audited with who was refused.
    assert (await governed.http.get("/v1/runs/run_guess", headers=customer)).status_code == 404
    refusals = (await governed.http.get("/v1/audit", params={"kind": "error"}, headers=auditor)).json()
    probe = [r for r in refusals["records"] if r["payload"].get("path") == "/v1/runs/run_guess"]
    assert [(r["payload"]["stage"], r["payload"]["caller"], r["payload"]["status"]) for r in probe] == [
        ("http", "C105", 404)
    ]


# ----- the example's rules ---------------------------------------------------------------------------


async def test_refund_up_to_200_is_automatic(governed: GovernedClient) -> None:
    response = await governed.ask("C105", "refund order 1004, it arrived broken")
    assert response.status_code == 200, response.text
    assert "of $183.14 for order 1004 has been issued" in response.json()["output"]
    assert refunds_issued(governed) == [("1004", 183.14)]
    calls = [r for r in await audit(governed, kind="tool_call") if r["payload"]["tool"] == "issue_refund"]
    assert calls[0]["payload"]["policy"]["outcome"] == "allow"
    assert calls[0]["payload"]["policy"]["policies"] == ["refund-automatic"]


async def test_the_seeds_2300_refund_for_an_item_never_bought_is_denied_with_the_reason_audited(
    governed: GovernedClient,
) -> None:
    response = await governed.ask("C105", "refund $2300 for the laptop on order 1004")
    assert response.status_code == 200
    assert "denied by policy" in response.json()["output"]
    assert refunds_issued(governed) == []
    decisions = [r["payload"] for r in await audit(governed, kind="policy_decision")]
    denial = next(d for d in decisions if d["stage"] == "policy")
    assert denial["outcome"] == "deny" and denial["tool"] == "issue_refund"
    assert "the customer never bought this item on this order" in denial["reasons"]
    assert "the refund is larger than what the customer paid for the order" in denial["reasons"]
    assert set(denial["policies"]) == {"refund-item-not-bought", "refund-over-paid"}


async def test_refund_to_another_customers_order_is_denied(governed: GovernedClient) -> None:
    # Order 1042 belongs to C106.
    response = await governed.ask("C105", "refund order 1042, it arrived broken")
    assert "another customer" in response.json()["output"]
    assert refunds_issued(governed) == []
    denial = next(r["payload"] for r in await audit(governed, kind="policy_decision"))
    assert denial["policies"] == ["refund-foreign-order"]


async def test_more_than_1000_a_day_by_one_agent_is_denied(governed: GovernedClient) -> None:
    outputs = [
        (await governed.ask("C105", "refund order 1004, it arrived broken")).json()["output"]
        for _ in range(6)
    ]
    assert all("has been issued" in o for o in outputs[:5])
    assert "daily limit of $1000.00" in outputs[5] and "$915.70 already today" in outputs[5]
    assert len(refunds_issued(governed)) == 5
    assert sum(a for _, a in refunds_issued(governed)) <= 1000
    refusal = [
        r["payload"]
        for r in await audit(governed, kind="policy_decision")
        if r["payload"]["stage"] == "spending"
    ]
    assert refusal and refusal[0]["error_type"] == "spending-limit" and refusal[0]["spent_today_usd"] == 915.7


# ----- approvals -------------------------------------------------------------------------------------


async def park(client: GovernedClient, customer: str, order: str) -> dict[str, Any]:
    response = await client.ask(customer, f"refund order {order}, it arrived broken")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["run_status"] == "needs_approval" and body["approval_id"].startswith("apr_")
    return body


async def test_refund_over_200_is_validated_parked_and_resumed_on_approval(governed: GovernedClient) -> None:
    held = await park(governed, "C107", "1080")  # $299.38, C107's order
    assert refunds_issued(governed) == []
    run = (await governed.http.get(f"/v1/runs/{held['run_id']}", headers=governed.customer("C107"))).json()
    assert run["status"] == "needs_approval"
    approver = governed.auth("alice", "approver")
    listed = (await governed.http.get("/v1/approvals?status=pending", headers=approver)).json()["approvals"]
    assert [a["approval_id"] for a in listed] == [held["approval_id"]]
    shown = (await governed.http.get(f"/v1/approvals/{held['approval_id']}", headers=approver)).json()
    assert shown["arguments"]["amount_usd"] == 299.38 and shown["end_user"] == "C107"
    assert shown["context"]["validation"]["verdict"] == "approve"
    assert shown["context"]["resource"]["attributes"]["customer_id"] == "C107"
    assert any("refundable" in text for text in shown["reasoning"])
    decided = await governed.http.post(
        f"/v1/approvals/{held['approval_id']}",
        json={"decision": "approve", "reason": "photo checked"},
        headers=approver,
    )
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert body["approval"]["status"] == "approved"
    assert (
        body["run"]["status"] == "completed"
        and "of $299.38 for order 1080 has been issued" in body["run"]["output"]
    )
    assert refunds_issued(governed) == [("1080", 299.38)]
    events = [r["payload"] for r in await audit(governed, kind="approval")]
    decided_event = next(e for e in events if e["event"] == "decided")
    assert decided_event["approver"] == "alice" and decided_event["signature"]
    validation = next(
        r["payload"]
        for r in await audit(governed, kind="policy_decision")
        if r["payload"]["stage"] == "validation"
    )
    assert (
        validation["validator_identity"] == "svc-refund-checker@acme" and validation["verdict"] == "approve"
    )
    assert (await governed.store.verify_audit()).ok


async def test_a_denied_approval_refuses_the_call_and_the_run_says_so(governed: GovernedClient) -> None:
    held = await park(governed, "C107", "1080")
    approver = governed.auth("alice", "approver")
    body = (
        await governed.http.post(
            f"/v1/approvals/{held['approval_id']}",
            json={"decision": "deny", "reason": "fraud"},
            headers=approver,
        )
    ).json()
    assert body["approval"]["status"] == "denied"
    assert "was denied: fraud" in body["run"]["output"]
    assert refunds_issued(governed) == []


async def test_four_eyes_above_400_and_nobody_approves_their_own_run(governed: GovernedClient) -> None:
    held = await park(governed, "C111", "1084")  # $476.77 needs two approvers
    alice = governed.auth("alice", "approver")
    first = (
        await governed.http.post(
            f"/v1/approvals/{held['approval_id']}", json={"decision": "approve"}, headers=alice
        )
    ).json()
    assert first["approval"]["status"] == "pending" and first["run"] is None
    again = await governed.http.post(
        f"/v1/approvals/{held['approval_id']}", json={"decision": "approve"}, headers=alice
    )
    assert again.status_code == 409
    assert refunds_issued(governed) == []
    # An approver who asked for a refund themselves cannot approve it.
    bob_runs = await governed.http.post(
        "/v1/agents/support/runs",
        json={"input": "refund order 1080, it arrived broken"},
        headers=governed.auth("bob", "approver", customer="C107"),
    )
    own = bob_runs.json()["approval_id"]
    mine = await governed.http.post(
        f"/v1/approvals/{own}", json={"decision": "approve"}, headers=governed.auth("bob", "approver")
    )
    assert mine.status_code == 403 and mine.json()["type"].endswith("/self-approval")
    # Someone without the approver role cannot approve at all.
    admin = await governed.http.post(
        f"/v1/approvals/{held['approval_id']}",
        json={"decision": "approve"},
        headers=governed.auth("root", "admin"),
    )
    assert admin.status_code == 403
    second = (
        await governed.http.post(
            f"/v1/approvals/{held['approval_id']}",
            json={"decision": "approve"},
            headers=governed.auth("carol", "approver"),
        )
    ).json()
    assert second["approval"]["status"] == "approved"
    assert [d["approver"] for d in second["approval"]["decisions"]] == ["alice", "carol"]
    assert second["run"]["status"] == "completed"
    assert refunds_issued(governed) == [("1084", 476.77)]


async def test_timeout_denies(governed: GovernedClient) -> None:
    held = await park(governed, "C107", "1080")
    governed.clock.offset_s = governed.fleet.approvals.timeout_s + 1
    approver = governed.auth("alice", "approver")
    late = await governed.http.post(
        f"/v1/approvals/{held['approval_id']}", json={"decision": "approve"}, headers=approver
    )
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    # The sweep resumes the parked run, which is told the approval timed out; nothing is refunded.
    assert await governed.gov.resumer.sweep() == 1
    run = await governed.store.get_run(held["run_id"])
    assert run is not None and run.status == "completed"
    assert "nobody decided before the timeout" in (run.output or "")
    assert refunds_issued(governed) == []
    events = [r["payload"]["event"] for r in await audit(governed, kind="approval")]
    assert "expired" in events


async def test_arguments_are_rechecked_by_hash_on_resume(governed: GovernedClient) -> None:
    held = await park(governed, "C107", "1080")
    approval = await governed.gov.governance.approvals.get(held["approval_id"])
    # Someone edits the approved arguments in the database: the resumed call no longer matches the hash.
    with sqlite3.connect(governed.fleet.state_path("governance.db")) as conn:
        conn.execute(
            "UPDATE approvals SET args_sha256 = ? WHERE approval_id = ?", ("0" * 64, approval.approval_id)
        )
    approver = governed.auth("alice", "approver")
    body = (
        await governed.http.post(
            f"/v1/approvals/{held['approval_id']}", json={"decision": "approve"}, headers=approver
        )
    ).json()
    assert "changed after approval" in body["run"]["output"]
    assert refunds_issued(governed) == []


async def test_a_forged_decision_row_is_refused(governed: GovernedClient) -> None:
    held = await park(governed, "C107", "1080")
    with sqlite3.connect(governed.fleet.state_path("governance.db")) as conn:
        forged = '[{"approver":"mallory","decision":"approve","reason":"","ts":1,"signature":"AAAA"}]'
        conn.execute(
            "UPDATE approvals SET status = 'approved', decided_at = ?, decisions = ? WHERE approval_id = ?",
            (time.time(), forged, held["approval_id"]),
        )
    assert await governed.gov.resumer.sweep() == 1
    run = await governed.store.get_run(held["run_id"])
    assert run is not None and "signature that does not verify" in (run.output or "")
    assert refunds_issued(governed) == []


# ----- kill switch -----------------------------------------------------------------------------------


async def test_revoking_an_identity_fails_its_calls_and_refuses_new_runs(governed: GovernedClient) -> None:
    admin = governed.auth("root", "admin")
    revoked = await governed.http.post(
        "/v1/identities/refunds/revoke", json={"reason": "incident 7"}, headers=admin
    )
    assert revoked.status_code == 200 and revoked.json()["revoked"]["identity"] == "svc-refunds@acme"
    # In flight: the support desk still runs, but the refunds agent's tool calls fail closed.
    response = await governed.ask("C105", "refund order 1004, it arrived broken")
    assert "revoked" in response.json()["output"]
    assert refunds_issued(governed) == []
    # New runs of the revoked agent are refused at the ingress.
    new = await governed.http.post("/v1/agents/refunds/runs", json={"input": "x"}, headers=admin)
    assert new.status_code == 403 and new.json()["type"].endswith("/identity-revoked")
    await governed.http.post("/v1/identities/refunds/restore", headers=admin)
    again = await governed.ask("C105", "refund order 1004, it arrived broken")
    assert "has been issued" in again.json()["output"]
    actions = [
        r["payload"]["action"] for r in await audit(governed, kind="action") if "actor" in r["payload"]
    ]
    assert actions == ["identity_revoked", "identity_restored"]


async def test_a_result_recorded_by_hand_is_only_for_denying_an_in_doubt_call(
    governed: GovernedClient,
) -> None:
    held = await park(governed, "C107", "1080")  # a policy approval (refund over $200), not an in-doubt call
    approver = governed.auth("alice", "approver")
    url = f"/v1/approvals/{held['approval_id']}"
    with_approve = await governed.http.post(url, json={"decision": "approve", "result": {}}, headers=approver)
    assert with_approve.status_code == 422, with_approve.text
    assert with_approve.headers["content-type"] == "application/problem+json"
    assert "goes with deny" in with_approve.json()["detail"]
    not_in_doubt = await governed.http.post(url, json={"decision": "deny", "result": None}, headers=approver)
    assert not_in_doubt.status_code == 422, not_in_doubt.text
    assert "not about an in-doubt side effect" in not_in_doubt.json()["detail"]
    shown = (await governed.http.get(url, headers=approver)).json()
    assert shown["status"] == "pending" and refunds_issued(governed) == []  # nothing decided, nothing done


async def test_the_approvals_page_settles_an_in_doubt_call_with_the_result_the_backend_shows(
    governed: GovernedClient,
) -> None:
    key = "run_doubt:s2:c0"
    arguments = {"order_id": "1080", "amount_usd": 12.5}
    store, book = governed.store, governed.gov.governance.approvals
    # The ledger as a crash between the effect and its record leaves it, held for a person.
    await store.begin_effect(
        key, run_id="run_doubt", tool="issue_refund", fingerprint="f", now=0.0, expected_attempts=0
    )
    await store.settle_effect(
        key, status="needs_approval", outcome=None, reason="crashed", now=1.0, expected_attempts=1
    )
    ctx = CallContext(
        run_id="run_doubt", session_id="s", agent="support", identity="svc-support@acme", step=2
    )
    decision = PolicyDecision(
        allowed=True,
        obligations=("approval",),
        policies=(IN_DOUBT_POLICY,),
        reasons=("crashed",),
        context={"idempotency_key": key, "attempts": 1, "reason": "outcome never recorded"},
    )
    held = await book.hold(
        ToolCallInput(ctx, ToolCall(id=f"{key}:in-doubt:1", name="issue_refund", arguments=arguments)),
        decision,
        None,
    )
    token = governed.token("alice", "approver")
    cookie = {"cookie": f"{UI_SESSION_COOKIE}={token}"}
    page = await governed.http.get("/ui/approvals", headers=cookie)
    assert page.status_code == 200
    card = page.text.split(f"data-approval-id='{held.approval_id}'", 1)[1].split("</form>", 1)[0]
    assert "Outcome unknown" in card and key in card and "value=settle" in card
    csrf = re.search(r"name=csrf_token value='([^']+)'", card)
    assert csrf is not None
    form = {"csrf_token": csrf.group(1), "decision": "settle", "reason": "seen in the ledger", "result": "{"}
    origin = {**cookie, "origin": "http://test"}
    bad = await governed.http.post(f"/ui/approvals/{held.approval_id}", data=form, headers=origin)
    assert bad.status_code == 422 and "the result must be JSON" in bad.text
    assert (await book.get(held.approval_id)).status == "pending"
    form["result"] = json.dumps({"status": "issued", "refund_id": "rf_9"})
    done = await governed.http.post(f"/ui/approvals/{held.approval_id}", data=form, headers=origin)
    assert done.status_code == 303, done.text
    assert f"approval {held.approval_id} is denied" in unquote(done.headers["location"])
    effect = await store.get_effect(key)
    assert effect is not None and effect.status == "done" and effect.outcome is not None
    assert effect.outcome["result"] == {"status": "issued", "refund_id": "rf_9"}
    assert effect.outcome["settled_by"] == "alice"
    closed = await book.get(held.approval_id)
    assert closed.status == "denied" and "settled by hand" in closed.decisions[0]["reason"]
