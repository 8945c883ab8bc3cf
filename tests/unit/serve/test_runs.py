"""The three run modes over ASGI with in-process agents: async + callbacks, SSE, idempotency keys,
admission (503 + Retry-After, batch shed first) and cancellation."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider
from serving_helpers import SECRET, Receiver, Served, serve_in_process, tiny_fleet

from raygent.actors.stateful import checkpoint_key
from raygent.core.config import Fleet
from raygent.serve.callbacks import verify_signature
from raygent.serve.sse import parse_events

RUNS = "/v1/agents/a/runs"


def run_count(fleet: Fleet) -> int:
    with sqlite3.connect(fleet.state_path("raygent.db")) as conn:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])


async def wait_status(
    served: Served, run_id: str, statuses: set[str], timeout_s: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = (await served.client.get(f"/v1/runs/{run_id}")).json()
        if body.get("status") in statuses or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.02)


async def test_async_run_is_accepted_then_completes(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = tiny_fleet(tmp_path)
    async with serve_in_process(fleet, tracer_provider) as served:
        resp = await served.client.post(RUNS, json={"input": "hi", "mode": "async"})
        assert resp.status_code == 202
        body = resp.json()
        assert resp.headers["location"] == f"/v1/runs/{body['run_id']}"
        assert body["status"] == "queued" and body["priority"] == "batch"
        done = await wait_status(served, body["run_id"], {"completed"})
        assert done["status"] == "completed" and done["mode"] == "async"
        assert done["output"] == "one two three four five six seven eight nine ten"
        assert done["usage"]["total_tokens"] > 0


async def test_callback_is_signed_retried_and_recorded(
    tmp_path: Path, tracer_provider: TracerProvider, receiver: Receiver
) -> None:
    receiver.statuses = [503, 500]  # two failures, then accepted
    fleet = tiny_fleet(tmp_path)
    async with serve_in_process(fleet, tracer_provider) as served:
        resp = await served.client.post(
            RUNS, json={"input": "hi", "mode": "async", "callback_url": receiver.url}
        )
        run_id = resp.json()["run_id"]
        assert await asyncio.to_thread(receiver.got.wait, 10)
        view = await wait_status(served, run_id, {"completed"})
        deadline = time.monotonic() + 5
        while view["callback"]["state"] != "delivered" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            view = (await served.client.get(f"/v1/runs/{run_id}")).json()
    assert [a["status_code"] for a in view["callback"]["attempts"]] == [503, 500, 200]
    assert view["callback"]["state"] == "delivered"
    assert len(receiver.requests) == 3
    headers, body = receiver.requests[-1]
    assert verify_signature(SECRET.encode(), headers, body, now=time.time())
    assert not verify_signature(b"another-secret", headers, body, now=time.time())
    assert not verify_signature(SECRET.encode(), headers, body + b" ", now=time.time())
    payload = json.loads(body)
    assert payload["type"] == "run.finished" and payload["run"]["run_id"] == run_id
    assert payload["run"]["status"] == "completed"
    # every retry carries the same delivery id, so receivers can de-duplicate
    assert {h["webhook-id"] for h, _ in receiver.requests} == {run_id}


async def test_callback_without_a_secret_is_refused(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = tiny_fleet(tmp_path)
    async with serve_in_process(fleet, tracer_provider, environ={}) as served:
        resp = await served.client.post(
            RUNS, json={"input": "hi", "mode": "async", "callback_url": "http://127.0.0.1:9/x"}
        )
        assert resp.status_code == 422
        assert "RAYGENT_CALLBACK_SECRET" in resp.json()["detail"]
    assert run_count(fleet) == 0


async def test_callback_url_needs_async_mode(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    async with serve_in_process(tiny_fleet(tmp_path), tracer_provider) as served:
        resp = await served.client.post(RUNS, json={"input": "hi", "callback_url": "http://127.0.0.1:9/x"})
        assert resp.status_code == 422
        assert "callback_url" in resp.text


async def test_stream_sends_steps_deltas_and_the_run(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    async with serve_in_process(tiny_fleet(tmp_path), tracer_provider) as served:
        resp = await served.client.post(RUNS, json={"input": "hi", "mode": "stream"})
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = parse_events(resp.text)
        names = [name for name, _ in events]
        assert names[0] == "run" and names[-1] == "done"
        assert "step" in names
        deltas = "".join(data["text"] for name, data in events if name == "delta")
        final = events[-1][1]
        assert deltas == final["output"] == "one two three four five six seven eight nine ten"
        assert len([n for n in names if n == "delta"]) == 5  # ten words in chunks of two
        stored = (await served.client.get(f"/v1/runs/{final['run_id']}")).json()
        assert stored["status"] == "completed" and stored["steps"] == final["steps"]


async def test_stateful_agent_streams_steps_and_deltas_from_its_session(
    tmp_path: Path, tracer_provider: TracerProvider
) -> None:
    async with serve_in_process(tiny_fleet(tmp_path, stateful=True), tracer_provider) as served:
        resp = await served.client.post(RUNS, json={"input": "hi", "mode": "stream", "session_id": "s-1"})
        assert resp.status_code == 200
        events = parse_events(resp.text)
        names = [name for name, _ in events]
        assert names[0] == "run" and names[-1] == "done"
        final = events[-1][1]
        assert [data for name, data in events if name == "step"] == final["steps"]
        assert [s["kind"] for s in final["steps"]] == ["model"]
        assert "".join(data["text"] for name, data in events if name == "delta") == final["output"]
        assert len([n for n in names if n == "delta"]) == 5
        # Served by the session's live state: the turn is in its checkpoint, not in the sessions table.
        checkpoint = await served.store.get_checkpoint(checkpoint_key("a", "s-1"))
        assert checkpoint is not None and checkpoint.version == 2  # the answer, then the conversation
        assert await served.store.get_session("s-1") is None


async def test_stream_over_the_example_fleet_shows_delegation(
    example_fleet: Fleet, tracer_provider: TracerProvider
) -> None:
    async with serve_in_process(example_fleet, tracer_provider) as served:
        resp = await served.client.post(
            "/v1/agents/support/runs", json={"input": "where is order 1042?", "mode": "stream"}
        )
        events = parse_events(resp.text)
        steps = [data for name, data in events if name == "step"]
        assert [s["kind"] for s in steps] == ["model", "tool", "model"]
        assert steps[1]["tool"] == "ask_orders"
        assert events[-1][1]["output"].startswith("Order 1042 (espresso machine) is delivered")


async def test_idempotency_key_replays_the_same_run(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = tiny_fleet(tmp_path)
    async with serve_in_process(fleet, tracer_provider) as served:
        headers = {"Idempotency-Key": '"order-7-retry"'}
        first = await served.client.post(RUNS, json={"input": "hi"}, headers=headers)
        again = await served.client.post(RUNS, json={"mode": "sync", "input": "hi"}, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        other = await served.client.post(RUNS, json={"input": "bye"}, headers=headers)
        assert other.status_code == 422
        assert other.json()["type"].endswith("idempotency-key-mismatch")
        assert other.json()["run_id"] == first.json()["run_id"]
    assert run_count(fleet) == 1


async def test_concurrent_duplicates_yield_one_run(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = tiny_fleet(tmp_path, latency_ms=200)
    async with serve_in_process(fleet, tracer_provider) as served:
        for mode in ("sync", "async"):
            headers = {"Idempotency-Key": f"dup-{mode}"}
            responses = await asyncio.gather(
                *(
                    served.client.post(RUNS, json={"input": "hi", "mode": mode}, headers=headers)
                    for _ in range(6)
                )
            )
            assert {r.status_code for r in responses} == {200 if mode == "sync" else 202}
            assert len({r.json()["run_id"] for r in responses}) == 1
            # The async run executes after its 202: let it finish before the service closes.
            await wait_status(served, responses[0].json()["run_id"], {"completed"})
    assert run_count(fleet) == 2


async def test_bad_idempotency_key_is_a_400(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = tiny_fleet(tmp_path)
    async with serve_in_process(fleet, tracer_provider) as served:
        for key in ("", "x" * 300, 'a"b'):
            resp = await served.client.post(RUNS, json={"input": "hi"}, headers={"Idempotency-Key": key})
            assert resp.status_code == 400, key
            assert resp.json()["type"].endswith("bad-idempotency-key")
    assert run_count(fleet) == 0


async def wait_inflight(served: Served, count: int) -> None:
    for _ in range(500):
        stats = (await served.client.get("/v1/serving/stats")).json()
        if sum(stats["agents"]["a"]["inflight"].values()) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never {count} runs in flight")


async def test_full_agent_is_503_with_retry_after_and_batch_is_shed_first(
    tmp_path: Path, tracer_provider: TracerProvider
) -> None:
    fleet = tiny_fleet(
        tmp_path, latency_ms=400, max_ongoing_requests=1, max_queued_requests=1, batch_max_inflight=1
    )
    async with serve_in_process(fleet, tracer_provider) as served:
        first = asyncio.create_task(served.client.post(RUNS, json={"input": "hi"}))
        await wait_inflight(served, 1)
        batch = await served.client.post(RUNS, json={"input": "hi", "priority": "batch"})
        assert batch.status_code == 503 and batch.headers["retry-after"] == "1"
        assert batch.headers["content-type"] == "application/problem+json"
        second = asyncio.create_task(served.client.post(RUNS, json={"input": "hi"}))  # queue slot
        await wait_inflight(served, 2)
        third = await served.client.post(RUNS, json={"input": "hi", "mode": "stream"})
        assert third.status_code == 503 and "retry-after" in third.headers
        assert (await first).status_code == (await second).status_code == 200
        stats = (await served.client.get("/v1/serving/stats")).json()["agents"]["a"]
    assert stats["shed"] == {"interactive": 1, "batch": 1}
    assert stats["high_water"] == 2 == stats["capacity"]
    assert run_count(fleet) == 2  # refused requests left no run


async def test_cancel_a_running_sync_run(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = tiny_fleet(tmp_path, latency_ms=5000)
    async with serve_in_process(fleet, tracer_provider) as served:
        running = asyncio.create_task(served.client.post(RUNS, json={"input": "hi"}))
        await wait_inflight(served, 1)
        run_id = next(iter(served.service.serving.inflight))
        assert (await wait_status(served, run_id, {"running"}))["status"] == "running"
        cancel = await served.client.post(f"/v1/runs/{run_id}/cancel")
        assert cancel.status_code == 202 and cancel.json()["status"] == "cancelling"
        resp = await running
        assert resp.status_code == 409 and resp.json()["type"].endswith("run-cancelled")
        stored = await wait_status(served, run_id, {"cancelled"})
        assert stored["status"] == "cancelled"
        again = await served.client.post(f"/v1/runs/{run_id}/cancel")
        assert again.status_code == 409 and again.json()["run_status"] == "cancelled"
        missing = await served.client.post("/v1/runs/run_nope/cancel")
        assert missing.status_code == 404


async def test_cancel_a_queued_async_run(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = tiny_fleet(tmp_path, batch_max_inflight=0)  # batch never gets a slot: stays queued
    async with serve_in_process(fleet, tracer_provider) as served:
        run_id = (await served.client.post(RUNS, json={"input": "hi", "mode": "async"})).json()["run_id"]
        assert (await served.client.get(f"/v1/runs/{run_id}")).json()["status"] == "queued"
        assert (await served.client.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
        stored = await wait_status(served, run_id, {"cancelled"})
        assert stored["status"] == "cancelled" and stored["error"]["status"] == 409
        assert stored["steps"] == []  # it never started


async def test_async_run_past_its_deadline_is_timed_out(
    tmp_path: Path, tracer_provider: TracerProvider
) -> None:
    fleet = tiny_fleet(tmp_path, batch_max_inflight=0)
    async with serve_in_process(fleet, tracer_provider) as served:
        resp = await served.client.post(RUNS, json={"input": "hi", "mode": "async", "deadline_s": 0.2})
        stored = await wait_status(served, resp.json()["run_id"], {"timed_out"})
        assert stored["status"] == "timed_out" and stored["error"]["status"] == 504


async def test_openapi_documents_modes_and_cancel(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    async with serve_in_process(tiny_fleet(tmp_path), tracer_provider) as served:
        spec = (await served.client.get("/openapi.json")).json()
    schema = spec["paths"]["/v1/agents/{agent}/runs"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["properties"]["mode"]["enum"] == ["sync", "async", "stream"]
    assert "/v1/runs/{run_id}/cancel" in spec["paths"]


def test_receiver_fixture_is_real(receiver: Receiver) -> None:
    assert httpx.post(receiver.url, json={}).status_code == 200
