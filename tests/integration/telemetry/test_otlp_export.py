"""Spans exported over real OTLP/HTTP to a receiver on loopback that decodes the protobuf payload: a
multi-step run with a tool call is one trace, correctly parented from the POST (SERVER) span down, with
the GenAI and raygent attributes, and a secret planted in the tool's arguments and result appears in no
attribute, event or byte of any span."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from otlpkit import CANARY, assert_one_tree, otlp_receiver, parent_name, write_canary_fleet

from raygent.actors.inprocess import InProcessFleet
from raygent.core.clock import SystemClock
from raygent.core.fleetfile import load_fleet
from raygent.core.store import SQLiteStore
from raygent.serve.api import ApiService, build_api
from raygent.telemetry.setup import build_tracer_provider

pytestmark = pytest.mark.integration


async def test_a_multi_step_run_is_one_correctly_parented_trace_at_the_otlp_receiver(tmp_path: Path) -> None:
    with otlp_receiver() as receiver:
        fleet = load_fleet(
            write_canary_fleet(tmp_path / "fleet", receiver.endpoint), state_dir=tmp_path / "state"
        )
        assert fleet.telemetry.exporter == "otlp"
        provider = build_tracer_provider(fleet.telemetry, resource_attributes={"raygent.component": "test"})
        tracer, clock = provider.get_tracer("raygent.test"), SystemClock()
        store = SQLiteStore(fleet.state_path("raygent.db"))
        inproc = InProcessFleet(fleet, store=store, tracer=tracer, clock=clock)
        service = ApiService(fleet, store=store, invoker=inproc, clock=clock, tracer=tracer)
        transport = httpx.ASGITransport(app=build_api(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.post("/v1/agents/keeper/runs", json={"input": f"unlock b7 with {CANARY}"})
        assert response.status_code == 200, response.text
        run = response.json()
        assert run["output"] == "Box b7 is open."
        provider.force_flush()
        provider.shutdown()
        await service.serving.aclose()
        await inproc.aclose()
        await store.close()
        spans = receiver.spans()
    by_id = assert_one_tree(spans)
    assert spans[0]["trace_id"] == run["trace_id"]
    names = sorted(s["name"] for s in spans)
    assert names == sorted(
        ["POST /v1/agents/{agent}/runs", "invoke_agent keeper", "chat m", "chat m", "execute_tool open_box"]
    )
    named = {s["name"]: s for s in spans}
    root = named["POST /v1/agents/{agent}/runs"]
    assert root["kind"] == 2  # SPAN_KIND_SERVER in the protobuf enum
    assert parent_name(by_id, named["invoke_agent keeper"]) == root["name"]
    for s in spans:
        if s["name"].startswith(("chat", "execute_tool")):
            assert parent_name(by_id, s) == "invoke_agent keeper"
    chat = next(s for s in spans if s["name"] == "chat m" and s["attributes"]["raygent.step"] == 1)
    for key in (
        "gen_ai.request.model",
        "gen_ai.provider.name",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.response.finish_reasons",
        "raygent.prompt.sha256",
        "raygent.prompt.version",
        "raygent.agent",
        "raygent.route.reason",
        "raygent.cost.usd",
    ):
        assert key in chat["attributes"], key
    assert (
        chat["attributes"]["raygent.agent"] == "keeper"
        and chat["attributes"]["gen_ai.usage.input_tokens"] > 0
    )
    tool = named["execute_tool open_box"]
    assert tool["attributes"]["gen_ai.tool.name"] == "open_box"
    assert '"password":"[REDACTED]"' in tool["attributes"]["gen_ai.tool.call.arguments"]
    assert '"box":"b7"' in tool["attributes"]["gen_ai.tool.call.arguments"]
    agent = named["invoke_agent keeper"]
    assert agent["attributes"]["raygent.status"] == "completed"
    assert root["attributes"]["http.response.status_code"] == 200
    for s in spans:  # the canary: not in any attribute, event, resource, or anywhere in the wire bytes
        assert CANARY not in str(s["attributes"]) + str(s["events"]) + str(s["resource"]), s["name"]
        assert CANARY.encode() not in s["raw"], s["name"]
