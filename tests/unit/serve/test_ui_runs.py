"""The runs page over ASGI: the list, and one run's waterfall from spans (JSONL) or from the audit trail."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from raygent.actors.inprocess import InProcessFleet
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet, TelemetrySpec
from raygent.core.fleetfile import load_fleet
from raygent.core.store import SQLiteStore
from raygent.serve.api import ApiService, build_api
from raygent.telemetry.runtime import fleet_tracer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "fleet.yaml"


async def page_of(fleet: Fleet) -> tuple[str, str, str]:
    """Run a delegated question; return the list page, the run page and the run id."""
    provider, tracer = fleet_tracer(fleet, "test")
    clock = SystemClock()
    store = SQLiteStore(fleet.state_path("raygent.db"))
    inproc = InProcessFleet(fleet, store=store, tracer=tracer, clock=clock)
    service = ApiService(fleet, store=store, invoker=inproc, clock=clock, tracer=tracer)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_api(service)), base_url="http://t"
    ) as http:
        run = (await http.post("/v1/agents/support/runs", json={"input": "where is order 1042?"})).json()
        listing = (await http.get("/ui/runs")).text
        detail = await http.get(f"/ui/runs/{run['run_id']}")
        assert detail.status_code == 200 and detail.headers["content-type"].startswith("text/html")
        missing = await http.get("/ui/runs/run_nope")
        assert missing.status_code == 404 and missing.json()["detail"] == "there is no run 'run_nope'"
    await service.serving.aclose()
    await inproc.aclose()
    await store.close()
    provider.shutdown()
    return listing, detail.text, run["run_id"]


@pytest.mark.parametrize("exporter", ["jsonl", "none"])
async def test_runs_list_and_waterfall(tmp_path: Path, exporter: str) -> None:
    fleet = load_fleet(EXAMPLE, state_dir=tmp_path / "state")
    fleet = fleet.model_copy(update={"telemetry": TelemetrySpec(exporter=exporter)})  # type: ignore[arg-type]
    listing, detail, run_id = await page_of(fleet)
    assert f"href='/ui/runs/{run_id}'" in listing and "completed" in listing and "$0.00" in listing
    assert "Order 1042 (espresso machine) is delivered" in detail
    kinds = re.findall(r"data-kind='(\w+)'", detail)
    labels = re.findall(r"<tr class='step'[^>]*><td>(?:&nbsp;)*([^<]+)", detail)
    if exporter == "jsonl":
        assert "timeline from the spans" in detail
        assert labels[0] == "POST /v1/agents/{agent}/runs" and "invoke_agent orders" in labels
        assert kinds.count("agent") == 2 and "execute_tool lookup_order" in labels
    else:
        assert "timeline from the audit trail" in detail
        # The delegated orders run is inlined: its model calls and its lookup sit between ask_orders' ends.
        assert labels == [
            "chat premium",
            "chat open-small",
            "execute_tool lookup_order",
            "chat open-small",
            "execute_tool ask_orders",
            "chat premium",
        ]
    assert kinds.count("model") == 4 and kinds.count("tool") == 2
    assert "gen_ai.usage.input_tokens" in detail or "input_tokens" in detail
