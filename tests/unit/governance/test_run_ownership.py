"""Run ownership on the governed HTTP API (in process, no Ray): a run is shown to and acted on only by
its requester, its end user, or a caller holding ``runs:read_all`` / ``runs:cancel_all``; everyone else
gets the same 404 as for a run that does not exist. Async runs carry the caller into the policies, and
idempotency keys are scoped per caller."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from govkit import GovernedClient
from test_governed_api import refunds_issued

from raygent.core.config import Fleet
from raygent.core.fleetfile import load_fleet
from raygent.core.govconfig import RoleSpec
from raygent.core.store import SQLiteStore
from raygent.core.store.base import RunRecord
from raygent.core.store.sqlite import _MIGRATIONS, SCHEMA_VERSION

GOVERNED = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "governed.yaml"
RUNS = "/v1/agents/support/runs"


@pytest.fixture
def governed_fleet(tmp_path: Path) -> Fleet:
    """The example fleet plus roles the example does not need: one that may cancel (its own runs), one
    that may open the runs pages, and an operator who may read and cancel every run."""
    fleet = load_fleet(GOVERNED, state_dir=tmp_path / "state")
    roles = {
        **fleet.roles,
        "canceller": RoleSpec(permissions=["agents:run:support", "runs:read", "runs:cancel"]),
        "operator": RoleSpec(permissions=["runs:read", "runs:read_all", "runs:cancel", "runs:cancel_all"]),
        "viewer": RoleSpec(permissions=["agents:run:support", "runs:read", "ui:runs"]),  # the runs pages
    }
    return fleet.model_copy(update={"roles": roles})


def not_found(body: dict[str, Any], run_id: str) -> bool:
    """The exact answer for a run that does not exist: nothing tells a foreign run apart."""
    return body["status"] == 404 and body["detail"] == f"there is no run {run_id!r}"


async def started(client: GovernedClient, headers: dict[str, str], text: str, **extra: Any) -> str:
    response = await client.http.post(RUNS, json={"input": text, **extra}, headers=headers)
    assert response.status_code in (200, 202), response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def test_listing_runs_shows_a_caller_their_own_unless_they_read_all(governed: GovernedClient) -> None:
    mine = await started(governed, governed.customer("C105"), "where is order 1004?")
    theirs = await started(governed, governed.customer("C106"), "where is order 1005?")

    async def listed(headers: dict[str, str], **params: Any) -> list[str]:
        resp = await governed.http.get("/v1/runs", params=params, headers=headers)
        assert resp.status_code == 200, resp.text
        return [r["run_id"] for r in resp.json()["runs"]]

    own = await listed(governed.customer("C105"))
    assert mine in own and theirs not in own
    assert theirs in await listed(governed.customer("C106"))
    everyone = await listed(governed.auth("erin", "auditor"), agent="support", limit=1000)
    assert {mine, theirs} <= set(everyone)
    assert await listed(governed.auth("erin", "auditor"), agent="nobody") == []
    assert (
        await governed.http.get("/v1/runs", headers=governed.auth("alice", "approver"))
    ).status_code == 403
    # Another caller's run id is no cursor for C105: the same answer as for an unknown id.
    foreign = await governed.http.get(
        "/v1/runs", params={"before": theirs}, headers=governed.customer("C105")
    )
    unknown = await governed.http.get(
        "/v1/runs", params={"before": "run_x"}, headers=governed.customer("C105")
    )
    assert foreign.status_code == unknown.status_code == 422
    assert foreign.json()["detail"].replace(theirs, "run_x") == unknown.json()["detail"]
    bad = await governed.http.get("/v1/runs", params={"limit": 0}, headers=governed.customer("C105"))
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


async def test_a_run_is_shown_only_to_its_requester_its_end_user_or_read_all(
    governed: GovernedClient,
) -> None:
    run_id = await started(governed, governed.customer("C105"), "where is order 1004?")
    own = await governed.http.get(f"/v1/runs/{run_id}", headers=governed.customer("C105"))
    assert own.status_code == 200 and own.json()["requester"] == "C105" and own.json()["end_user"] == "C105"
    stored = await governed.store.get_run(run_id)
    assert stored is not None and (stored.requester, stored.end_user) == ("C105", "C105")

    other = await governed.http.get(f"/v1/runs/{run_id}", headers=governed.customer("C106"))
    missing = await governed.http.get("/v1/runs/run_nope", headers=governed.customer("C106"))
    assert other.status_code == missing.status_code == 404
    assert not_found(other.json(), run_id) and not_found(missing.json(), "run_nope")

    # The example's auditor and an operator hold runs:read_all; admin's "*:*" covers it too.
    for headers in (
        governed.auth("erin", "auditor"),
        governed.auth("olga", "operator"),
        governed.auth("root", "admin"),
    ):
        shown = await governed.http.get(f"/v1/runs/{run_id}", headers=headers)
        assert shown.status_code == 200 and shown.json()["run_id"] == run_id
    # An approver holds no runs:read at all: the route itself is refused.
    assert (
        await governed.http.get(f"/v1/runs/{run_id}", headers=governed.auth("alice", "approver"))
    ).status_code == 403


async def test_the_end_user_sees_a_run_a_service_started_for_them(governed: GovernedClient) -> None:
    frontend = governed.auth("web-frontend", "customer", customer="C107")
    run_id = await started(governed, frontend, "where is order 1080?")
    for headers in (frontend, governed.customer("C107")):
        body = (await governed.http.get(f"/v1/runs/{run_id}", headers=headers)).json()
        assert body["requester"] == "web-frontend" and body["end_user"] == "C107"
    # Another service acting for another customer, and another customer: as if it did not exist.
    for headers in (governed.auth("web-frontend-2", "customer", customer="C105"), governed.customer("C105")):
        response = await governed.http.get(f"/v1/runs/{run_id}", headers=headers)
        assert response.status_code == 404 and not_found(response.json(), run_id)


async def test_cancel_acts_only_for_the_owner_or_cancel_all(governed: GovernedClient) -> None:
    owner = governed.auth("C105", "canceller", customer="C105")
    run_id = await started(governed, owner, "where is order 1004?")
    # Someone else holding runs:cancel: 404, exactly as for a run that does not exist.
    stranger = governed.auth("C106", "canceller", customer="C106")
    foreign = await governed.http.post(f"/v1/runs/{run_id}/cancel", headers=stranger)
    assert foreign.status_code == 404 and not_found(foreign.json(), run_id)
    # The owner and the operator reach the run: it already ended, so nothing to cancel (409).
    for headers in (owner, governed.auth("olga", "operator")):
        ended = await governed.http.post(f"/v1/runs/{run_id}/cancel", headers=headers)
        assert ended.status_code == 409 and ended.json()["run_status"] == "completed", ended.text


async def test_runs_stored_without_a_requester_are_shown_only_with_read_all(
    governed: GovernedClient,
) -> None:
    # A row from before runs recorded who started them (or a `raygent run` from the command line).
    legacy = RunRecord(
        run_id="run_legacy",
        agent="support",
        session_id="ses_legacy",
        status="completed",
        input="where is order 1004?",
        created_at=1.0,
        updated_at=2.0,
    )
    await governed.store.create_run(legacy)
    stored = await governed.store.get_run("run_legacy")
    assert stored is not None and (stored.requester, stored.end_user) == ("", "")
    refused = await governed.http.get("/v1/runs/run_legacy", headers=governed.customer("C105"))
    assert refused.status_code == 404
    shown = await governed.http.get("/v1/runs/run_legacy", headers=governed.auth("erin", "auditor"))
    assert shown.status_code == 200 and shown.json()["requester"] == ""


async def test_the_runs_pages_show_only_the_callers_runs(governed: GovernedClient) -> None:
    me = governed.auth("C105", "viewer", customer="C105")
    mine = await started(governed, me, "where is order 1004?")
    theirs = await started(governed, governed.auth("C106", "viewer", customer="C106"), "where is order 1042?")
    listing = await governed.http.get("/ui/runs", headers=me)
    assert listing.status_code == 200, listing.text
    assert f"data-run='{mine}'" in listing.text and f"data-run='{theirs}'" not in listing.text
    root = governed.auth("root", "admin")  # "*:*" covers ui:runs and runs:read_all
    everything = (await governed.http.get("/ui/runs", headers=root)).text
    assert f"data-run='{mine}'" in everything and f"data-run='{theirs}'" in everything
    own_page = await governed.http.get(f"/ui/runs/{mine}", headers=me)
    assert own_page.status_code == 200 and mine in own_page.text
    foreign_page = await governed.http.get(f"/ui/runs/{theirs}", headers=me)
    assert foreign_page.status_code == 404 and not_found(foreign_page.json(), theirs)


# ----- async runs carry the caller ---------------------------------------------------------------------


async def settled(client: GovernedClient, run_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """Poll the run until it leaves queued/running (bounded by the run's own deadline; no timing asserted)."""
    body: dict[str, Any] = {}
    for _ in range(3000):
        body = (await client.http.get(f"/v1/runs/{run_id}", headers=headers)).json()
        if body.get("status") not in ("queued", "running"):
            break
        await asyncio.sleep(0.02)
    return body


async def test_a_governed_async_refund_up_to_200_completes(governed: GovernedClient) -> None:
    customer = governed.customer("C105")
    accepted = await governed.http.post(
        RUNS, json={"input": "refund order 1004, it arrived broken", "mode": "async"}, headers=customer
    )
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]
    entry = await governed.gov.service.serving.async_ledger.get(run_id)
    assert entry is not None and (entry.requester, entry.end_user) == ("C105", "C105")
    # The queued run is already the caller's only.
    assert (
        await governed.http.get(f"/v1/runs/{run_id}", headers=governed.customer("C106"))
    ).status_code == 404
    done = await settled(governed, run_id, customer)
    assert done["status"] == "completed" and done["mode"] == "async", done
    assert "of $183.14 for order 1004 has been issued" in done["output"]
    assert refunds_issued(governed) == [("1004", 183.14)]
    await governed.gov.service.serving.aclose()


async def test_a_governed_async_refund_over_200_parks_for_approval(governed: GovernedClient) -> None:
    customer = governed.customer("C107")
    accepted = await governed.http.post(
        RUNS, json={"input": "refund order 1080, it arrived broken", "mode": "async"}, headers=customer
    )
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]
    parked = await settled(governed, run_id, customer)
    assert parked["status"] == "needs_approval", parked
    assert refunds_issued(governed) == []
    approver = governed.auth("alice", "approver")
    pending = (await governed.http.get("/v1/approvals?status=pending", headers=approver)).json()["approvals"]
    held = next(a for a in pending if a["run_id"].startswith(run_id))  # the delegated refunds run
    assert held["requester"] == "C107" and held["end_user"] == "C107" and held["amount_usd"] == 299.38
    decided = await governed.http.post(
        f"/v1/approvals/{held['approval_id']}", json={"decision": "approve", "reason": "ok"}, headers=approver
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["run"]["status"] == "completed"
    assert refunds_issued(governed) == [("1080", 299.38)]
    await governed.gov.service.serving.aclose()


# ----- idempotency keys are per caller ----------------------------------------------------------------


async def test_two_callers_with_the_same_idempotency_key_never_see_each_others_run(
    governed: GovernedClient,
) -> None:
    key = {"Idempotency-Key": "retry-1"}
    body = {"input": "where is order 1004?"}
    first = await governed.http.post(RUNS, json=body, headers={**governed.customer("C105"), **key})
    assert first.status_code == 200, first.text
    # Another caller, same key and same body: a run of its own, not C105's replayed.
    other = await governed.http.post(RUNS, json=body, headers={**governed.customer("C106"), **key})
    assert other.status_code == 200 and "idempotent-replayed" not in other.headers
    assert other.json()["run_id"] != first.json()["run_id"]
    # Same subject acting for another end user: not the same caller either.
    frontend_a = governed.auth("web-frontend", "customer", customer="C105")
    frontend_b = governed.auth("web-frontend", "customer", customer="C106")
    a = await governed.http.post(RUNS, json=body, headers={**frontend_a, **key})
    b = await governed.http.post(RUNS, json=body, headers={**frontend_b, **key})
    assert "idempotent-replayed" not in b.headers and a.json()["run_id"] != b.json()["run_id"]
    # Another caller with the same key and another body: not a mismatch (422) of someone else's key.
    changed = await governed.http.post(
        RUNS, json={"input": "where is order 1042?"}, headers={**governed.customer("C107"), **key}
    )
    assert changed.status_code == 200, changed.text
    # The same caller again: the first response, replayed.
    again = await governed.http.post(RUNS, json=body, headers={**governed.customer("C105"), **key})
    assert again.headers["idempotent-replayed"] == "true" and again.json()["run_id"] == first.json()["run_id"]
    runs = {r.run_id for r in await governed.store.list_runs(agent="support", limit=100)}
    assert len(runs) == 5


# ----- stored rows from before the owner fields ---------------------------------------------------------


async def test_a_store_written_before_the_owner_fields_migrates_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # a version-2 database, as the previous release left it
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version in (1, 2):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
        conn.execute(
            "INSERT INTO runs VALUES ('run_old', 'support', 'ses_1', 'completed', 'hi', 1.0, 2.0, 'ok', NULL,"
            " '[]', 1, 2, 0.5, '[]', NULL, 'svc-support@acme')"
        )
    store = SQLiteStore(path)
    old = await store.get_run("run_old")
    assert old is not None and old.output == "ok" and (old.requester, old.end_user) == ("", "")
    new = RunRecord("run_new", "support", "ses_2", "running", "hi", 3.0, 3.0, requester="web", end_user="C1")
    await store.create_run(new)
    # save_run never moves ownership: it is part of what was asked, like the input.
    await store.save_run(RunRecord("run_new", "support", "ses_2", "completed", "hi", 3.0, 4.0, requester="x"))
    saved = await store.get_run("run_new")
    assert (
        saved is not None
        and saved.status == "completed"
        and (saved.requester, saved.end_user) == ("web", "C1")
    )
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION == 3


def test_a_redis_run_written_before_the_owner_fields_loads() -> None:
    from raygent.core.store.redis import _run_fields, _run_from

    record = RunRecord("run_r", "support", "ses", "completed", "hi", 1.0, 2.0, requester="web", end_user="C1")
    immutable, mutable = _run_fields(record)
    assert _run_from(immutable.encode(), mutable.encode()) == record
    old = {k: v for k, v in json.loads(immutable).items() if k not in ("requester", "end_user")}
    loaded = _run_from(json.dumps(old).encode(), mutable.encode())
    assert (loaded.run_id, loaded.requester, loaded.end_user) == ("run_r", "", "")
