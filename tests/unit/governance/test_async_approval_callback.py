"""An async run held for approval reports its real end: the callback comes once, after the person's
decision and the resumed run, not when the run parks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from govkit import GovernedClient, MovableClock
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.config import Fleet
from raygent.core.store import SQLiteStore, open_store
from raygent.serve.agents import LocalAgentPort
from raygent.serve.api import ApiService, build_api
from raygent.serve.auth import governed_api
from raygent.serve.callbacks import verify_signature

SECRET = "approval-callback-secret"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def client(
    governed_fleet: Fleet, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GovernedClient]:
    monkeypatch.setenv("RAYGENT_CALLBACK_SECRET", SECRET)
    callbacks = governed_fleet.server.callbacks.model_copy(update={"allowed_hosts": ["127.0.0.1"]})
    server = governed_fleet.server.model_copy(update={"callbacks": callbacks})
    fleet = governed_fleet.model_copy(update={"server": server})
    store = open_store(fleet)
    assert isinstance(store, SQLiteStore)
    tracer = TracerProvider().get_tracer("approval-callback")
    port = LocalAgentPort(fleet, store=store, tracer=tracer, clock=clock)
    service = ApiService(fleet, store=store, agents=port, clock=clock, tracer=tracer)
    gov = governed_api(service)
    assert gov is not None
    transport = httpx.ASGITransport(app=build_api(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as http:
        yield GovernedClient(http, gov, fleet, store, clock)
    await service.serving.aclose()
    await port.aclose()
    await store.close()


async def wait_for(predicate: Any, what: str) -> None:
    for _ in range(600):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_the_callback_of_an_async_run_held_for_approval_reports_the_approved_end(
    client: GovernedClient, receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, got = receiver
    customer = client.customer("C107")
    accepted = await client.http.post(
        "/v1/agents/support/runs",
        json={"input": "refund order 1080, it arrived broken", "mode": "async", "callback_url": url},
        headers=customer,
    )
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]

    async def parked() -> bool:
        body = (await client.http.get(f"/v1/runs/{run_id}", headers=customer)).json()
        return bool(body.get("status") == "needs_approval")

    await wait_for(parked, "the run parks for approval")
    await asyncio.sleep(1.0)  # the runner polls the parked run a few times: still no callback
    assert got == []

    approver = client.auth("alice", "approver")
    pending = (await client.http.get("/v1/approvals?status=pending", headers=approver)).json()["approvals"]
    held = next(a for a in pending if a["run_id"].startswith(run_id))
    decided = await client.http.post(
        f"/v1/approvals/{held['approval_id']}", json={"decision": "approve", "reason": "ok"}, headers=approver
    )
    assert decided.status_code == 200, decided.text

    async def delivered() -> bool:
        return len(got) >= 1

    await wait_for(delivered, "the callback")
    await asyncio.sleep(0.5)
    assert len(got) == 1  # once, for the end
    headers, body = got[0]
    assert verify_signature(SECRET.encode(), headers, body, now=time.time())
    payload = json.loads(body)
    assert payload["type"] == "run.finished" and payload["run"]["run_id"] == run_id
    assert payload["run"]["status"] == "completed"
