"""The example fleet on real local Ray + Serve, over real HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import httpx
import pytest

from raygent.core.store import open_store
from raygent.core.store.base import AuditQuery
from raygent.telemetry.jsonl import read_spans

pytestmark = pytest.mark.integration


def runs_count(served: Any) -> int:
    with sqlite3.connect(served.fleet.state_path("raygent.db")) as conn:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])


def test_run_answers_and_is_stored(served_fleet: Any) -> None:
    with httpx.Client(base_url=served_fleet.base_url, timeout=30) as client:
        resp = client.post("/v1/agents/support/runs", json={"input": "where is order 1042?"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["output"] == "Order 1042 (espresso machine) is delivered. Delivered on 2026-11-18."
        assert body["usage"]["input_tokens"] > 0 and body["cost_usd"] > 0
        stored = client.get(f"/v1/runs/{body['run_id']}").json()
        assert stored["status"] == "completed" and stored["output"] == body["output"]
    store = open_store(served_fleet.fleet)
    records = asyncio.run(store.query_audit(AuditQuery(run_id=body["run_id"])))
    assert records[0].kind == "prompt" and records[-1].kind == "action"
    assert asyncio.run(store.verify_audit()).ok


def test_tool_calls_leave_the_agent_process(served_fleet: Any) -> None:
    with httpx.Client(base_url=served_fleet.base_url, timeout=30) as client:
        resp = client.post("/v1/agents/orders/runs", json={"input": "status of order 1044"})
        assert resp.status_code == 200, resp.text
        trace_id = resp.json()["trace_id"]
    deadline = time.monotonic() + 10
    while True:
        spans = [
            s for s in read_spans(served_fleet.fleet.state_path("spans.jsonl")) if s["trace_id"] == trace_id
        ]
        if any(s["name"].startswith("POST") for s in spans) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_name = {s["name"]: s for s in spans}
    agent_span = by_name["invoke_agent orders"]
    tool_span = by_name["execute_tool lookup_order"]
    chat_span = next(s for s in spans if s["name"].startswith("chat"))
    assert agent_span["resource"]["raygent.component"] == "agent.orders"
    assert tool_span["resource"]["raygent.component"] == "gateway"
    assert chat_span["resource"]["raygent.component"] == "router"
    instances = {s["resource"]["service.instance.id"] for s in (agent_span, tool_span, chat_span)}
    assert len(instances) == 3  # three processes, one trace
    assert tool_span["parent_span_id"] == agent_span["span_id"]


@pytest.mark.parametrize(
    ("agent", "body", "status"),
    [
        ("support", b"{oops", 400),
        ("support", b'{"input": 1}', 422),
        ("support", b'{"input": "' + b"y" * 70_000 + b'"}', 413),
        ("ghost", b'{"input": "hi"}', 404),
    ],
)
def test_bad_input_over_http_changes_nothing(served_fleet: Any, agent: str, body: bytes, status: int) -> None:
    before = runs_count(served_fleet)
    with httpx.Client(base_url=served_fleet.base_url, timeout=30) as client:
        resp = client.post(
            f"/v1/agents/{agent}/runs", content=body, headers={"content-type": "application/json"}
        )
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == status
    assert runs_count(served_fleet) == before


def test_concurrent_clients_all_complete(served_fleet: Any) -> None:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served_fleet.base_url, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/agents/support/runs", json={"input": f"where is order {1001 + i}?"})
                    for i in range(32)
                )
            )

    responses = asyncio.run(go())
    assert [r.status_code for r in responses] == [200] * 32
    outputs = [r.json()["output"] for r in responses]
    assert all(o.startswith(f"Order {1001 + i} ") for i, o in enumerate(outputs))
