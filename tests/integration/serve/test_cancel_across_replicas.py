"""A cancel reaches the ingress replica that drives the run (``server.replicas`` > 1).

* two replicas' broadcasts on the session's Ray, in this process: one cancels a run the other drives
  (also when the cancel is posted while the other is still starting to listen);
  a run nobody drives is refused after the wait; a lost board is replaced and cancels still arrive;
* a fleet served with two ingress replicas: every ``POST /v1/runs/{id}/cancel`` of a streamed run is
  ``202`` and the run ends ``cancelled``, whichever replica the cancel lands on (before, about half
  were ``409 driven by another ingress replica``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from load_fleet_helpers import LoadFleet

from raygent.core.config import Fleet
from raygent.serve.cancels import CancelBroadcast, board_name
from raygent.serve.errors import RunCancelledError
from raygent.serve.inflight import InflightRuns
from raygent.serve.sse import parse_events

pytestmark = pytest.mark.integration

PREFIX = "/two-doors"


async def test_a_replica_cancels_a_run_another_replica_drives(served_fleet: Any) -> None:
    import ray

    fleet_name = f"cancels-{time.time_ns()}"
    inflight_a, inflight_b = InflightRuns(), InflightRuns()
    a = CancelBroadcast(fleet_name, inflight_a, wait_s=0.5)
    b = CancelBroadcast(fleet_name, inflight_b, wait_s=5.0)
    inflight_a.on_run = a.start
    try:
        driven = asyncio.create_task(inflight_a.run("run_1", asyncio.sleep(60)))
        await asyncio.sleep(0)  # A drives the run and starts listening; B posts before A first listens
        assert await b.post("run_1") is True
        with pytest.raises(RunCancelledError):
            await asyncio.wait_for(driven, 10)
        assert await a.post("run_nobody") is False  # refused after A's 0.5 s wait

        # The board goes (its owner replica was scaled down): a new one is made, cancels still arrive.
        ray.kill(ray.get_actor(board_name(fleet_name)))
        driven = asyncio.create_task(inflight_a.run("run_2", asyncio.sleep(60)))
        cancelled = False
        for _ in range(50):  # A's listener notices the lost board and moves to the new one
            cancelled = await b.post("run_2")
            if cancelled:
                break
        assert cancelled
        with pytest.raises(RunCancelledError):
            await asyncio.wait_for(driven, 10)
    finally:
        await a.aclose()
        await b.aclose()


@pytest.fixture(scope="module")
def two_doors(served_fleet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadFleet]:
    from ray import serve

    from raygent.serve.app import build_app

    agent = {"identity": "svc-slow", "prompt": "p@1", "num_cpus": 0.05, "tier": "cheap"}
    fleet = Fleet.model_validate(
        {
            "name": "two-doors",
            "server": {"replicas": 2, "num_cpus": 0.05, "router_num_cpus": 0.05, "gateway_num_cpus": 0.05},
            "models": {
                "slow": {
                    "kind": "offline",
                    "tier": "cheap",
                    "latency_ms": 20_000,  # runs last until they are cancelled
                    "rules": [{"match": ".", "say": "done"}],
                }
            },
            "prompts": {"p": {"versions": {"1": "You are $agent."}}},
            "agents": {"slow": {**agent, "max_ongoing_requests": 16, "max_queued_requests": 16}},
            "state_dir": str(tmp_path_factory.mktemp("two-doors")),
        }
    )
    serve.run(build_app(fleet), name=fleet.name, route_prefix=PREFIX)
    try:
        yield LoadFleet(fleet=fleet, base_url=served_fleet.base_url + PREFIX, app_name=fleet.name)
    finally:
        serve.delete(fleet.name)


async def test_every_cancel_over_http_reaches_the_replica_driving_the_run(two_doors: LoadFleet) -> None:
    async def one(client: httpx.AsyncClient) -> tuple[int, str, list[tuple[str, Any]]]:
        async with client.stream(
            "POST", "/v1/agents/slow/runs", json={"input": "x", "mode": "stream"}
        ) as resp:
            assert resp.status_code == 200
            chunks = resp.aiter_text()
            text = await anext(chunks)
            run_id = parse_events(text)[0][1]["run_id"]
            cancel = await client.post(f"/v1/runs/{run_id}/cancel")
            async for chunk in chunks:  # the stream ends once the run is cancelled
                text += chunk
        return cancel.status_code, run_id, parse_events(text)

    async with httpx.AsyncClient(base_url=two_doors.base_url, timeout=60) as client:
        results = await asyncio.gather(*(one(client) for _ in range(8)))
        for status, run_id, events in results:
            assert status == 202, (run_id, events)
            assert events[-1][0] == "error" and events[-1][1]["type"].endswith("run-cancelled"), events[-1]
            status_now = ""
            for _ in range(300):  # the agent records it as it stops; bounded wait, no timing asserted
                status_now = (await client.get(f"/v1/runs/{run_id}")).json()["status"]
                if status_now == "cancelled":
                    break
                await asyncio.sleep(0.1)
            assert status_now == "cancelled", run_id
