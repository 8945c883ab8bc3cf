"""The HTTP API in process (httpx over ASGI, no Ray): contracts, and every bad input refused cleanly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from raygent.actors.inprocess import InProcessFleet
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditQuery
from raygent.serve.api import ApiService, build_api


def counts(fleet: Fleet) -> tuple[int, int]:
    with sqlite3.connect(fleet.state_path("raygent.db")) as conn:
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        sessions = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
    return runs, sessions


async def test_sync_run_returns_answer_usage_and_cost(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/agents/support/runs", json={"input": "where is order 1042?", "session_id": "cust-7"}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "completed"
    assert body["output"].startswith("Order 1042 (espresso machine) is delivered")
    assert body["run_id"].startswith("run_") and body["session_id"] == "cust-7"
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + body["usage"]["output_tokens"] > 0
    assert body["cost_usd"] > 0
    assert len(body["trace_id"]) == 32
    got = await client.get(f"/v1/runs/{body['run_id']}")
    assert got.status_code == 200
    assert got.json()["output"] == body["output"]
    assert got.json()["usage"] == body["usage"]


async def test_incoming_traceparent_is_continued(client: httpx.AsyncClient) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    resp = await client.post(
        "/v1/agents/support/runs", json={"input": "hello"}, headers={"traceparent": parent}
    )
    assert resp.json()["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


BAD_INPUTS = [
    pytest.param("support", b"{not json", 400, "not valid JSON", id="malformed-json"),
    pytest.param("support", b"\xff\xfe", 400, "not valid JSON", id="not-utf8"),
    pytest.param("support", b"[1, 2]", 422, "JSON object", id="not-an-object"),
    pytest.param("support", b'{"input": 5}', 422, "input", id="wrong-type"),
    pytest.param("support", b"{}", 422, "input", id="missing-input"),
    pytest.param("support", b'{"input": ""}', 422, "input", id="empty-input"),
    pytest.param("support", b'{"input": "hi", "admin": true}', 422, "admin", id="unknown-field"),
    pytest.param("support", b'{"input": "hi", "mode": "turbo"}', 422, "mode", id="bad-mode"),
    pytest.param(
        "support", b'{"input": "hi", "session_id": "../../etc"}', 422, "session_id", id="bad-session-id"
    ),
    pytest.param(
        "support", b'{"input": "' + b"x" * 16_001 + b'"}', 422, "16001 characters", id="input-too-long"
    ),
    pytest.param("support", b'{"input": "' + b"x" * 70_000 + b'"}', 413, "limit", id="body-too-large"),
    pytest.param("nobody", b'{"input": "hi"}', 404, "no agent named 'nobody'", id="unknown-agent"),
]


@pytest.mark.parametrize(("agent", "body", "status", "fragment"), BAD_INPUTS)
async def test_bad_input_is_a_problem_and_changes_nothing(
    client: httpx.AsyncClient,
    example_fleet: Fleet,
    store: SQLiteStore,
    agent: str,
    body: bytes,
    status: int,
    fragment: str,
) -> None:
    before = counts(example_fleet)
    resp = await client.post(
        f"/v1/agents/{agent}/runs", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["status"] == status
    assert fragment in problem["detail"] + str(problem.get("errors", ""))
    assert {"type", "title", "detail"} <= problem.keys()
    assert "Traceback" not in resp.text
    assert counts(example_fleet) == before
    rejected = await store.query_audit(AuditQuery(kind="error"))
    assert rejected[-1].payload["stage"] == "ingress" and rejected[-1].payload["status"] == status


async def test_declared_oversize_body_is_refused_before_reading(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/agents/support/runs",
        content=b"{}",
        headers={"content-length": "999999999", "content-type": "application/json"},
    )
    assert resp.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/runs/run_missing", 404), ("GET", "/nope", 404), ("DELETE", "/v1/agents/support/runs", 405)],
)
async def test_routing_errors_are_problems(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    resp = await client.request(method, path)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == status


async def test_specialists_can_be_started_directly(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/agents/orders/runs", json={"input": "order 1042"})
    assert resp.status_code == 200
    assert "delivered" in resp.json()["output"]


async def test_run_past_its_deadline_is_a_504_problem_with_the_run_id(
    tmp_path: Path, tracer_provider: TracerProvider
) -> None:
    fleet = Fleet.model_validate(
        {
            "name": "slow",
            "models": {"m": {"kind": "offline", "latency_ms": 3000}},
            "prompts": {"p": {"versions": {"1": "x"}}},
            "agents": {"a": {"identity": "svc-a", "prompt": "p@1", "deadline_s": 0.2}},
            "state_dir": str(tmp_path),
        }
    )
    store = SQLiteStore(fleet.state_path("raygent.db"))
    tracer = tracer_provider.get_tracer("t")
    invoker = InProcessFleet(fleet, store=store, tracer=tracer, clock=SystemClock())
    service = ApiService(fleet, store=store, invoker=invoker, clock=SystemClock(), tracer=tracer)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_api(service)), base_url="http://t"
    ) as c:
        resp = await c.post("/v1/agents/a/runs", json={"input": "hi"})
        assert resp.status_code == 504
        assert resp.headers["content-type"] == "application/problem+json"
        problem = resp.json()
        assert problem["run_status"] == "timed_out"
        run = (await c.get(f"/v1/runs/{problem['run_id']}")).json()
        assert run["status"] == "timed_out" and run["error"]["status"] == 504
    await store.close()


async def test_health_ready_agents_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    agents = (await client.get("/v1/agents")).json()["agents"]
    assert {a["name"] for a in agents} == {"support", "orders", "refunds"}
    spec = (await client.get("/openapi.json")).json()
    op = spec["paths"]["/v1/agents/{agent}/runs"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["input"] and schema["additionalProperties"] is False
    assert "/v1/runs/{run_id}" in spec["paths"]


async def test_runs_are_listed_newest_first_as_get_shows_them(client: httpx.AsyncClient) -> None:
    support = (await client.post("/v1/agents/support/runs", json={"input": "where is order 1006?"})).json()
    first = (await client.post("/v1/agents/orders/runs", json={"input": "where is order 1004?"})).json()
    second = (await client.post("/v1/agents/orders/runs", json={"input": "where is order 1005?"})).json()
    listed = (await client.get("/v1/runs", params={"limit": 2})).json()["runs"]
    assert [r["run_id"] for r in listed] == [second["run_id"], first["run_id"]]
    assert listed[0] == (await client.get(f"/v1/runs/{second['run_id']}")).json()
    only = (await client.get("/v1/runs", params={"agent": "orders", "limit": 1})).json()["runs"]
    assert [r["run_id"] for r in only] == [second["run_id"]]
    assert (await client.get("/v1/runs", params={"limit": 2})).json()["next_before"] == first["run_id"]
    rest = (await client.get("/v1/runs", params={"before": first["run_id"], "limit": 50})).json()
    assert rest["next_before"] is None and first["run_id"] not in [r["run_id"] for r in rest["runs"]]
    assert rest["runs"][-1]["run_id"] == support["run_id"]  # the oldest, after its delegated run
    unknown = await client.get("/v1/runs", params={"before": "run_nope"})
    assert unknown.status_code == 422 and "not a run of this listing" in unknown.json()["detail"]
    # The support run delegated to the orders agent: that run is the orders agent's.
    of_support = (await client.get("/v1/runs", params={"agent": "support"})).json()["runs"]
    assert [r["run_id"] for r in of_support] == [support["run_id"]]
