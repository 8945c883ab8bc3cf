"""Two machines of one governed fleet, with ``store.governance_dsn``: one approval book and one kill
switch for both. Each machine is an API service in process (ASGI, no Ray) with its own state directory;
they share the run store (a Redis on a real cluster; one SQLite file here) and the keys (a cluster
hands every machine the same ``keys/``). With a ``governance.db`` per machine these tests fail: the
approval held on one is not listed on the other, and a revocation stays on its machine.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from govkit import PG_DSN, GovernedClient, MovableClock, pg_schema
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.config import Fleet
from raygent.core.fleetfile import load_fleet
from raygent.core.store import SQLiteStore
from raygent.serve.agents import LocalAgentPort
from raygent.serve.api import ApiService, build_api
from raygent.serve.auth import governed_api

pytestmark = pytest.mark.integration

GOVERNED = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "governed.yaml"


@asynccontextmanager
async def machine(fleet: Fleet, clock: MovableClock) -> AsyncIterator[GovernedClient]:
    store = SQLiteStore(fleet.state_path(fleet.store.path))
    tracer = TracerProvider().get_tracer("machine")
    port = LocalAgentPort(fleet, store=store, tracer=tracer, clock=clock)
    service = ApiService(fleet, store=store, agents=port, clock=clock, tracer=tracer)
    app = build_api(service)
    gov = governed_api(service)
    assert gov is not None
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60
        ) as http:
            yield GovernedClient(http, gov, fleet, store, clock)
    finally:
        await port.router.aclose()
        await store.close()


@pytest.fixture
async def two_machines(
    tmp_path: Path, clock: MovableClock
) -> AsyncIterator[tuple[GovernedClient, GovernedClient]]:
    with pg_schema() as schema:
        loaded = load_fleet(GOVERNED, state_dir=tmp_path / "machine-1")
        store = loaded.store.model_copy(
            update={
                "path": str(tmp_path / "shared" / "raygent.db"),
                "governance_dsn": PG_DSN,
                "audit_schema": schema,
            }
        )
        one = loaded.model_copy(update={"store": store})
        two = one.model_copy(update={"state_dir": str(tmp_path / "machine-2")})
        (tmp_path / "shared").mkdir()
        async with machine(one, clock) as first:
            # Machine 1 created the token and audit signing keys; machine 2 gets the same ones.
            shutil.copytree(one.state_path("keys"), two.state_path("keys"))
            async with machine(two, clock) as second:
                yield first, second
        # Neither machine kept governance state of its own.
        assert not one.state_path("governance.db").exists() and not two.state_path("governance.db").exists()


async def test_an_approval_held_on_one_machine_is_listed_and_decided_on_the_other(
    two_machines: tuple[GovernedClient, GovernedClient],
) -> None:
    first, second = two_machines
    asked = await first.ask("C107", "refund order 1080, it arrived broken")  # $299.38: needs approval
    assert asked.status_code == 202, asked.text
    held = asked.json()
    assert held["run_status"] == "needs_approval"
    approver = second.auth("alice", "approver")
    listed = (await second.http.get("/v1/approvals?status=pending", headers=approver)).json()["approvals"]
    assert [a["approval_id"] for a in listed] == [held["approval_id"]]
    decided = await second.http.post(
        f"/v1/approvals/{held['approval_id']}",
        json={"decision": "approve", "reason": "photo checked"},
        headers=approver,
    )
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert body["approval"]["status"] == "approved"
    # Machine 2 resumed the run machine 1 parked: its progress was in the shared parking lot.
    assert body["run"]["status"] == "completed" and "has been issued" in body["run"]["output"]
    on_first = first.auth("bob", "approver")
    assert (await first.http.get("/v1/approvals?status=pending", headers=on_first)).json()["approvals"] == []
    shown = (await first.http.get(f"/v1/approvals/{held['approval_id']}", headers=on_first)).json()
    assert shown["status"] == "approved" and [d["approver"] for d in shown["decisions"]] == ["alice"]


async def test_an_identity_revoked_on_one_machine_is_refused_on_the_other(
    two_machines: tuple[GovernedClient, GovernedClient],
) -> None:
    first, second = two_machines
    revoked = await first.http.post(
        "/v1/identities/refunds/revoke", json={"reason": "incident 7"}, headers=first.auth("root", "admin")
    )
    assert revoked.status_code == 200, revoked.text
    admin = second.auth("root", "admin")
    # New runs of the revoked agent are refused at machine 2's ingress, its tool calls at its gateway.
    new = await second.http.post("/v1/agents/refunds/runs", json={"input": "x"}, headers=admin)
    assert new.status_code == 403 and new.json()["type"].endswith("/identity-revoked")
    refused = await second.ask("C105", "refund order 1004, it arrived broken")
    assert "revoked" in refused.json()["output"]
    listed = (await second.http.get("/v1/identities", headers=admin)).json()
    assert "svc-refunds@acme" in str(listed)
    # Restored on machine 2: machine 1 refunds again.
    assert (await second.http.post("/v1/identities/refunds/restore", headers=admin)).status_code == 200
    again = await first.ask("C105", "refund order 1004, it arrived broken")
    assert "has been issued" in again.json()["output"]
