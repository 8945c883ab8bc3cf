"""In-memory exporter: a governed refund (support → refunds → lookup, validator agent, approval hold) is
one trace with correct parents, the hold visible on its tool span, and no secret anywhere."""

from __future__ import annotations

import time
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raygent.actors.inprocess import InProcessFleet
from raygent.core.clock import SystemClock
from raygent.core.fleetfile import load_fleet
from raygent.core.ids import new_id
from raygent.core.runs import RunInput
from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditQuery

GOVERNED = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "governed.yaml"


async def test_a_delegated_run_with_tool_calls_and_an_approval_hold_is_one_trace(tmp_path: Path) -> None:
    fleet = load_fleet(GOVERNED, state_dir=tmp_path / "state")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    store = SQLiteStore(fleet.state_path("raygent.db"))
    inproc = InProcessFleet(fleet, store=store, tracer=provider.get_tracer("t"), clock=SystemClock())
    run_id = new_id("run")
    out = await inproc.invoke(
        RunInput(
            run_id=run_id,
            agent="support",
            input="refund order 1080, it arrived broken",
            session_id="ses-1",
            deadline_ts=time.time() + 60,
            requester="C107",
            end_user="C107",
        )
    )
    await inproc.aclose()
    assert (
        out.status == "needs_approval"
        and out.error is not None
        and out.error["approval_id"].startswith("apr_")
    )
    spans = exporter.get_finished_spans()
    assert (
        len({s.context.trace_id for s in spans}) == 1
        and format(spans[0].context.trace_id, "032x") == out.trace_id
    )
    by_id = {s.context.span_id: s for s in spans}

    def parent(name: str, **attrs: object) -> str:
        span = next(
            s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attrs.items())
        )
        assert span.parent is not None, name
        return by_id[span.parent.span_id].name

    [root] = [s for s in spans if s.parent is None]
    assert root.name == "invoke_agent support"
    assert parent("execute_tool ask_refunds") == "invoke_agent support"
    assert parent("invoke_agent refunds") == "execute_tool ask_refunds"
    assert parent("execute_tool lookup_order") == "invoke_agent refunds"
    assert parent("execute_tool issue_refund") == "invoke_agent refunds"
    assert parent("invoke_agent refund-checker") == "execute_tool issue_refund"  # the validator agent
    assert parent("chat checker-small") == "invoke_agent refund-checker"
    assert parent("chat premium", **{"raygent.agent": "refunds", "raygent.step": 1}) == "invoke_agent refunds"
    held = next(s for s in spans if s.name == "execute_tool issue_refund")
    assert [e.name for e in held.events] == ["raygent.held"]
    assert held.attributes["raygent.policy.decision"] == "require_approval"
    assert held.status.status_code.name == "UNSET"  # waiting for a person is not an error
    refunds = next(s for s in spans if s.name == "invoke_agent refunds")
    assert refunds.attributes["raygent.status"] == "needs_approval"
    assert refunds.attributes["raygent.caller_chain"] == "support"
    # The audit trail carries the same trace id as the spans, for the hold too.
    approvals = await store.query_audit(AuditQuery(kind="approval"))
    assert approvals and {a.trace_id for a in approvals} == {out.trace_id}
    await store.close()
