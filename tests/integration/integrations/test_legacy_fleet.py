"""The legacy-mainframe example fleet end to end: agents reach the order system over MQ, the customer
service over SOAP and the green screen over a pseudo-terminal, all through the real ToolGateway (grant
and schema checks, tracing and audit interceptors)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from legacy_helpers import legacy_fleet
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raygent.core.store import open_store
from raygent.core.store.base import AuditQuery

pytestmark = pytest.mark.integration


async def audit_kinds(fleet: Any, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    store = open_store(fleet)
    try:
        return [(r.kind, r.payload) for r in await store.query_audit(AuditQuery(run_id=run_id))]
    finally:
        await store.close()


async def test_orders_agent_over_mq_one_trace_across_the_hop(
    tmp_path: Path, rabbit_queue: str, start_responder: Any, make_fleet: Any, spans: InMemorySpanExporter
) -> None:
    responder_spans = tmp_path / "order-system-spans.jsonl"
    start_responder(rabbit_queue, spans=responder_spans)
    fleet = legacy_fleet(tmp_path / "state", queue=rabbit_queue)
    out = await make_fleet(fleet).run("orders", "Where is order 1002?")
    assert out.status == "completed", out.error
    assert out.output == (
        "Order 1002 (phone case) is processing; balance due 16.64 USD. Being packed at the warehouse."
    )
    for _ in range(100):
        if responder_spans.exists() and responder_spans.read_text().strip():
            break
        await asyncio.sleep(0.05)
    remote = json.loads(responder_spans.read_text().splitlines()[0])
    tool_span = next(s for s in spans.get_finished_spans() if s.name == "execute_tool lookup_order")
    # The responder's span is in the run's trace, a child of the gateway's tool-call span.
    assert remote["trace_id"] == out.trace_id == format(tool_span.context.trace_id, "032x")
    assert remote["parent_span_id"] == format(tool_span.context.span_id, "016x")
    kinds = [k for k, _ in await audit_kinds(fleet, out.run_id)]
    assert "tool_call" in kinds and "backend_response" in kinds


async def test_accounts_agent_over_soap(tmp_path: Path, soap_service: str, make_fleet: Any) -> None:
    fleet = legacy_fleet(tmp_path / "state", queue="unused", wsdl=soap_service)
    legacy = make_fleet(fleet)
    found = await legacy.run("accounts", "Tell me about customer C103")
    missing = await legacy.run("accounts", "Tell me about customer C999")
    invalid = await legacy.run("accounts", "Tell me about customer 42")
    assert found.output == (
        "Grace Hopper is a silver customer with a credit limit of 2500.0 USD and 7 open orders."
    )
    assert missing.output is not None and missing.output.startswith(
        "The customer system said: GetCustomer failed: no customer C999"
    )
    assert invalid.output is not None and "is not a customer id" in invalid.output
    audited = await audit_kinds(fleet, missing.run_id)
    response = next(p for k, p in audited if k == "backend_response")
    assert response["is_error"] is True and response["result"]["error_type"] == "soap-fault"


async def test_screens_agent_drives_the_green_screen(tmp_path: Path, make_fleet: Any) -> None:
    fleet = legacy_fleet(tmp_path / "state", queue="unused")
    legacy = make_fleet(fleet)
    found = await legacy.run("screens", "What does the screen say about order 1003?")
    missing = await legacy.run("screens", "What does the screen say about order 777?")
    assert found.output == "The green screen shows order status CANCELLED for DESK LAMP, total 396.36 USD."
    assert missing.output == "The order screen said: the screen shows: ORDER 777 NOT FOUND"


async def test_unreachable_soap_service_is_a_clear_error(tmp_path: Path, make_fleet: Any) -> None:
    fleet = legacy_fleet(tmp_path / "state", queue="unused", wsdl="http://127.0.0.1:9/?wsdl")
    out = await make_fleet(fleet).run("accounts", "Tell me about customer C103")
    assert out.output is not None and out.output.startswith("The customer system said: cannot load the WSDL")
