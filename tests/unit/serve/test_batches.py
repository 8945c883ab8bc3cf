"""POST /v1/batches and friends over ASGI, without a Ray cluster: every refusal is a problem document,
and batches made by the CLI are readable over HTTP. (Submitting to a real cluster: the integration
tests in tests/integration/batch.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from serving_helpers import api_client

from raygent.actors.inprocess import InProcessFleet
from raygent.batch.client import BatchClient
from raygent.batch.executor import LocalExecutor
from raygent.batch.runner import BatchRunner
from raygent.core.clock import SystemClock
from raygent.core.config import BatchSpec, Fleet
from raygent.core.store import SQLiteStore

NO_CLUSTER = "http://127.0.0.1:9"


@pytest.fixture
def fleet(example_fleet: Fleet) -> Fleet:
    return example_fleet.model_copy(
        update={"batch": BatchSpec(jobs_address=NO_CLUSTER, max_request_bytes=4096)}
    )


@pytest.fixture
async def client(
    fleet: Fleet, store: SQLiteStore, inproc: InProcessFleet, tracer_provider: TracerProvider
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(fleet, store, inproc, tracer_provider) as c:
        yield c


def problem(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    doc: dict[str, object] = resp.json()
    assert doc["status"] == status
    return doc


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"agent": "nobody", "items": [{"input": "hi"}]}, 404, "no agent named 'nobody'"),
        ({"agent": "orders"}, 422, "exactly one of 'input_jsonl'"),
        ({"agent": "orders", "items": [], "input_jsonl": ""}, 422, "exactly one of"),
        ({"agent": "orders", "items": [{"input": "hi"}], "priority": 1}, 422, "priority"),
        ({"agent": "orders", "items": [{"input": "hi"}], "tier": "gold"}, 422, "tier"),
        ({"agent": "orders", "input_jsonl": "x" * 5000}, 413, "larger than the limit of 4096"),
        ({"agent": "orders", "items": [{"input": "where is order 1004?"}]}, 503, "no Ray cluster answers"),
    ],
)
async def test_refusals_are_problem_documents(
    client: httpx.AsyncClient, fleet: Fleet, body: dict[str, object], status: int, fragment: str
) -> None:
    doc = problem(await client.post("/v1/batches", json=body), status)
    assert fragment in str(doc["detail"])
    assert not fleet.state_path(fleet.batch.results_dir).exists()  # nothing was created


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    problem(
        await client.post("/v1/batches", content=b"{nope", headers={"content-type": "application/json"}), 400
    )


async def test_batches_are_readable_over_http(
    client: httpx.AsyncClient, fleet: Fleet, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"input": "where is order 1004?"}\nnot json\n{"input": "hello"}\n')
    paths = BatchClient(fleet, clock=SystemClock()).create(source, agent="orders")
    manifest = paths.read_manifest()
    runner = BatchRunner(
        paths, manifest, LocalExecutor(manifest), max_input_chars=16_000, clock=SystemClock()
    )
    await runner.run()
    runner.close()
    batch_id = paths.root.name

    view = (await client.get(f"/v1/batches/{batch_id}")).json()
    assert (view["status"], view["total"], view["completed"], view["invalid"]) == ("completed", 3, 2, 1)
    results = [json.loads(x) for x in (await client.get(f"/v1/batches/{batch_id}/results")).text.splitlines()]
    assert [r["line"] for r in results] == [1, 3]
    assert results[0]["output"].startswith("Order 1004")
    errors = (
        await client.get(f"/v1/batches/{batch_id}/results", params={"errors": "true"})
    ).text.splitlines()
    assert [json.loads(x)["line"] for x in errors] == [2]
    assert "not running" in str(problem(await client.post(f"/v1/batches/{batch_id}/cancel"), 409)["detail"])
    problem(await client.get("/v1/batches/batch_0000000000"), 404)
    problem(await client.get("/v1/batches/nope"), 404)
