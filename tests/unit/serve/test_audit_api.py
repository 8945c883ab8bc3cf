"""The audit trail over HTTP (in process, no Ray): the records of a run in chain order, paged by
sequence number; bad parameters are problem documents; the chain check names a tampered record.
(Who may read it in a governed fleet: tests/unit/governance/test_governed_api.py.)"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from serving_helpers import api_client

from raygent.actors.inprocess import InProcessFleet
from raygent.core.config import Fleet
from raygent.core.errors import StoreError
from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditQuery


async def run(client: httpx.AsyncClient, text: str) -> str:
    resp = await client.post("/v1/agents/support/runs", json={"input": text})
    assert resp.status_code == 200, resp.text
    run_id: str = resp.json()["run_id"]
    return run_id


async def test_a_runs_records_in_chain_order_paged_by_sequence(
    client: httpx.AsyncClient, store: SQLiteStore
) -> None:
    run_id = await run(client, "where is order 1004?")
    await run(client, "where is order 1005?")
    expected = [r.to_dict() for r in await store.query_audit(AuditQuery(run_id=run_id))]
    assert len(expected) >= 3  # prompt, model step, tool call, ...

    whole = (await client.get("/v1/audit", params={"run_id": run_id})).json()
    assert whole == {"records": expected, "next_after_seq": None}

    pages: list[dict[str, object]] = []
    after = 0
    while True:
        page = (
            await client.get("/v1/audit", params={"run_id": run_id, "limit": 2, "after_seq": after})
        ).json()
        pages += page["records"]
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    assert pages == expected

    tools = (await client.get("/v1/audit", params={"kind": "tool_call", "limit": 1000})).json()["records"]
    assert tools and all(r["kind"] == "tool_call" for r in tools)
    assert {r["run_id"] for r in tools} >= {run_id}


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"after_seq": -1}, "after_seq"),
        ({"since": "x"}, "since"),
    ],
)
async def test_bad_parameters_are_problem_documents(
    client: httpx.AsyncClient, params: dict[str, object], where: str
) -> None:
    resp = await client.get("/v1/audit", params=params)
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"
    assert where in resp.text


async def test_verify_names_the_first_tampered_record(
    client: httpx.AsyncClient, example_fleet: Fleet
) -> None:
    await run(client, "where is order 1004?")
    ok = (await client.get("/v1/audit/verify")).json()
    assert ok["ok"] is True and ok["records_checked"] >= 3 and ok["first_bad_seq"] is None
    with sqlite3.connect(example_fleet.state_path("raygent.db")) as conn:
        conn.execute("DROP TRIGGER audit_no_update")  # what someone with the file could do
        conn.execute("UPDATE audit SET payload = ? WHERE seq = 2", (json.dumps({"edited": True}),))
    bad = (await client.get("/v1/audit/verify")).json()
    assert bad["ok"] is False and bad["first_bad_seq"] == 2 and bad["reason"]


async def test_every_refusal_of_a_route_is_audited(client: httpx.AsyncClient, store: SQLiteStore) -> None:
    refused = [
        (await client.get("/v1/runs/run_nope"), 404, "not-found"),
        (await client.get("/v1/audit", params={"limit": 0}), 422, "validation-failed"),
        (await client.post("/v1/runs/run_nope/cancel"), 404, "not-found"),
        (await client.get("/v1/nowhere"), 404, "http-404"),
        (await client.delete("/v1/agents"), 405, "http-405"),
    ]
    records = [r for r in await store.query_audit(AuditQuery(kind="error")) if r.payload["stage"] == "http"]
    assert [(r.payload["status"], r.payload["error_type"]) for r in records] == [
        (status, slug) for _, status, slug in refused
    ]
    for (resp, status, _), record in zip(refused, records, strict=True):
        assert resp.status_code == status
        assert record.payload["path"] == resp.json()["instance"]
        assert record.payload["detail"] == resp.json()["detail"]


async def test_a_store_failure_is_not_audited_into_the_failing_store(
    example_fleet: Fleet, inproc: InProcessFleet, tracer_provider: TracerProvider
) -> None:
    class ReadsFail(SQLiteStore):
        appended = 0

        async def get_run(self, run_id: str) -> Any:
            raise StoreError("the store is unreachable")

        async def append_audit(self, drafts: Any) -> Any:
            ReadsFail.appended += len(drafts)
            return await super().append_audit(drafts)

    store = ReadsFail(example_fleet.state_path("raygent.db"))
    async with api_client(example_fleet, store, inproc, tracer_provider) as c:
        resp = await c.get("/v1/runs/run_x")
        assert resp.status_code == StoreError.status
        assert resp.json()["type"].endswith("store-unavailable")
        assert ReadsFail.appended == 0
        assert (await c.get("/v1/nowhere")).status_code == 404
        assert ReadsFail.appended == 1  # other refusals still are
    await store.close()
