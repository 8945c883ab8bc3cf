"""The bank case over HTTP, with ``async_mode: park``: the responder takes 800 ms, the tool's timeout is
500 ms. A sync caller gets ``202`` + ``Location`` and finds the completed run there later; an async caller
gets its signed callback when the resumed run ends, also when the whole service restarted between the
run parking and the reply arriving. The real RabbitMQ and the example's responder process; the API over
ASGI with the agents in process (no Ray)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from legacy_helpers import RABBIT_URL, inquiries, legacy_fleet, until
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.store import SQLiteStore
from raygent.integrations.mq.envelope import correlation_id_for
from raygent.integrations.resumer import ReplyResumer
from raygent.serve.agents import LocalAgentPort
from raygent.serve.api import ApiService, build_api
from raygent.serve.callbacks import CallbackSender, verify_signature
from raygent.serve.serving import build_serving

pytestmark = pytest.mark.integration

SECRET = "bank-callback-secret"


@dataclass
class Hooks:
    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    """A real local HTTP server that records the callbacks it gets."""
    state: dict[str, Hooks] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state["h"].received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["h"] = Hooks(url=f"http://127.0.0.1:{server.server_address[1]}/bank-hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["h"]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Service:
    client: httpx.AsyncClient
    store: SQLiteStore
    resumer: ReplyResumer


@asynccontextmanager
async def service(
    fleet: Fleet, tracer_provider: TracerProvider, *, lease_s: float = 30.0
) -> AsyncIterator[Service]:
    """One API replica with its agents and gateway in process, and the gateway's reply resumer running
    (what ``GatewayActor.check_health`` starts in a served fleet)."""
    clock, tracer = SystemClock(), tracer_provider.get_tracer("test")
    store = SQLiteStore(fleet.state_path("raygent.db"))
    port = LocalAgentPort(fleet, store=store, tracer=tracer, clock=clock)
    sender = CallbackSender(fleet.server.callbacks, clock=clock, environ={"RAYGENT_CALLBACK_SECRET": SECRET})
    serving = build_serving(
        fleet, store=store, agents=port, clock=clock, tracer=tracer, sender=sender, lease_s=lease_s,
        sweep_interval_s=0.1,
    )  # fmt: skip
    api = ApiService(fleet, store=store, agents=port, clock=clock, tracer=tracer, serving=serving)
    resumer = ReplyResumer.for_gateway(port.gateway, store=store, invoker=port, clock=clock)
    assert resumer is not None
    serving.runner.start()  # takes over async runs a previous replica left (as the ingress does)
    await resumer.start()
    transport = httpx.ASGITransport(app=build_api(api))
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
        try:
            yield Service(client, store, resumer)
        finally:
            resumer.stop()
            await port.gateway.aclose()
            await resumer.drain()
            await serving.aclose()
            await port.aclose()
            await store.close()


def park_fleet(tmp_path: Path, queue: str) -> Fleet:
    fleet = legacy_fleet(tmp_path / "state", queue=queue, lookup_order_async={"async_mode": "park"})
    callbacks = fleet.server.callbacks.model_copy(update={"allowed_hosts": ["127.0.0.1"]})
    return fleet.model_copy(update={"server": fleet.server.model_copy(update={"callbacks": callbacks})})


async def test_sync_caller_gets_202_and_the_status_url_then_the_completed_run(
    tmp_path: Path, rabbit_queue: str, start_responder: Any, tracer_provider: TracerProvider
) -> None:
    state = tmp_path / "order-system"
    responder = start_responder(rabbit_queue, state=state, latency_ms=800)
    async with service(park_fleet(tmp_path, rabbit_queue), tracer_provider) as svc:
        resp = await svc.client.post("/v1/agents/orders-async/runs", json={"input": "Where is order 1004?"})
        assert resp.status_code == 202, resp.text
        body = resp.json()
        run_id = body["run_id"]
        assert resp.headers["location"] == f"/v1/runs/{run_id}"
        assert body["run_status"] == "waiting" and body["type"].endswith("/tool-pending")

        async def completed() -> bool:
            got = await svc.client.get(resp.headers["location"])
            return bool(got.status_code == 200 and got.json()["status"] not in ("waiting", "running"))

        await until(completed)
        run = (await svc.client.get(resp.headers["location"])).json()
    assert run["status"] == "completed", run
    assert run["output"].startswith("Order 1004 (desk lamp) is delivered")
    tool_steps = [s for s in run["steps"] if s["kind"] == "tool"]
    assert len(tool_steps) == 1 and tool_steps[0]["is_error"] is False
    call_id = tool_steps[0]["call_id"]
    cid = correlation_id_for("lookup_order_async", call_id)
    assert body["correlation_id"] == cid
    assert responder.text().count(f"committed {cid}") == 1 and inquiries(state, cid) == 1


async def test_async_callback_fires_once_when_the_parked_run_ends_after_a_restart(
    tmp_path: Path, rabbit_queue: str, start_responder: Any, tracer_provider: TracerProvider, hooks: Hooks
) -> None:
    state = tmp_path / "order-system"
    # Slow enough that the first replica is surely gone before the reply (a replica still closing would
    # consume it, and there would be no restart to test).
    responder = start_responder(rabbit_queue, state=state, latency_ms=3000)
    fleet = park_fleet(tmp_path, rabbit_queue)
    async with service(fleet, tracer_provider, lease_s=1.0) as first:
        resp = await first.client.post(
            "/v1/agents/orders-async/runs",
            json={"input": "Where is order 1001?", "mode": "async", "callback_url": hooks.url},
        )
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
        assert resp.headers["location"] == f"/v1/runs/{run_id}"

        async def waiting() -> bool:
            record = await first.store.get_run(run_id)
            return record is not None and record.status == "waiting"

        await until(waiting)

    # The whole replica (API, async runner, agents, gateway, resumer) is gone while the request is in
    # flight. The responder answers into the durable reply queue; nothing has been delivered.
    async def reply_queued() -> bool:
        import aio_pika

        connection = await aio_pika.connect_robust(RABBIT_URL)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(f"{rabbit_queue}.reply", passive=True)
            return bool(declared.declaration_result.message_count)

    await until(reply_queued)
    assert hooks.received == [] and first.resumer.resumed == []

    async with service(fleet, tracer_provider, lease_s=1.0) as second:

        async def delivered() -> bool:
            got = (await second.client.get(f"/v1/runs/{run_id}")).json()
            return bool(got.get("callback", {}).get("state") == "delivered")

        await until(delivered)
        view = (await second.client.get(f"/v1/runs/{run_id}")).json()
    assert second.resumer.resumed == [run_id]
    assert view["status"] == "completed" and view["output"].startswith("Order 1001 (backpack) is shipped")
    assert len(hooks.received) == 1  # one callback, for the run's end (none for the parking)
    headers, raw = hooks.received[0]
    assert verify_signature(SECRET.encode(), headers, raw, now=time.time())
    payload = json.loads(raw)
    assert payload["type"] == "run.finished" and payload["run"]["run_id"] == run_id
    assert payload["run"]["status"] == "completed" and payload["run"]["output"] == view["output"]
    call_id = next(s for s in view["steps"] if s["kind"] == "tool")["call_id"]
    cid = correlation_id_for("lookup_order_async", call_id)
    assert responder.text().count(f"committed {cid}") == 1 and inquiries(state, cid) == 1
