"""The bank case with ``async_mode: park`` deployed on Ray Serve (the session's Ray) and driven over real
HTTP: the sync caller gets 202 + Location, the gateway replica's reply resumer (started by Serve's
health check) resumes the run in the agent deployment when the 800 ms reply arrives, and the run at the
Location is completed with one effect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from legacy_helpers import inquiries, legacy_fleet

from raygent.integrations.mq.envelope import correlation_id_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREFIX = "/legacy-park"


@pytest.fixture
def parked_app(served_fleet: Any, tmp_path: Path, rabbit_queue: str) -> Iterator[str]:
    from ray import serve

    from raygent.serve.app import build_app

    fleet = legacy_fleet(tmp_path / "state", queue=rabbit_queue, lookup_order_async={"async_mode": "park"})
    server = fleet.server.model_copy(
        update={"num_cpus": 0.05, "router_num_cpus": 0.05, "gateway_num_cpus": 0.05}
    )
    fleet = fleet.model_copy(update={"name": "legacy-park", "server": server})
    serve.run(build_app(fleet), name=fleet.name, route_prefix=PREFIX)
    try:
        yield served_fleet.base_url + PREFIX
    finally:
        serve.delete(fleet.name)


def test_a_served_run_parks_and_the_gateway_resumes_it(
    parked_app: str, rabbit_queue: str, start_responder: Any, tmp_path: Path
) -> None:
    state = tmp_path / "order-system"
    responder = start_responder(rabbit_queue, state=state, latency_ms=800)
    with httpx.Client(base_url=parked_app, timeout=60) as client:
        resp = client.post("/v1/agents/orders-async/runs", json={"input": "Where is order 1004?"})
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert body["run_status"] == "waiting" and body["type"].endswith("/tool-pending")
        location = resp.headers["location"]
        run_id = location.rsplit("/", 1)[1]
        cid = body["correlation_id"]
        assert cid == correlation_id_for("lookup_order_async", f"{run_id}:s1:c0")
        deadline = time.monotonic() + 90  # the resumer starts at the gateway's first health check
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = client.get(location).json()
            if status["status"] not in ("waiting", "running"):
                break
            time.sleep(0.25)
    assert status["status"] == "completed", status
    assert status["output"].startswith("Order 1004 (desk lamp) is delivered")
    assert responder.text().count(f"committed {cid}") == 1 and inquiries(state, cid) == 1
