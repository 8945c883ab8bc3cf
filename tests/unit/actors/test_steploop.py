"""The step loop, in process, over the real router, gateway, interceptor chains and SQLite store."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raygent.actors.inprocess import InProcessFleet
from raygent.actors.steploop import trim_history
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditQuery

EXAMPLE_DIR = Path(__file__).resolve().parents[3] / "examples" / "support_desk"


def run_input(
    agent: str, text: str, *, session: str = "s1", run_id: str = "run_t1", deadline_s: float = 20
) -> RunInput:
    return RunInput(
        run_id=run_id, agent=agent, input=text, session_id=session, deadline_ts=time.time() + deadline_s
    )


async def test_status_question_is_delegated_and_answered(inproc: InProcessFleet, store: SQLiteStore) -> None:
    out = await inproc.invoke(run_input("support", "Where is order 1042?"))
    assert out.status == "completed", out.error
    assert out.output == "Order 1042 (espresso machine) is delivered. Delivered on 2026-11-18."
    # Support's own step plus the delegated orders run: tokens and cost roll up into the caller's run.
    assert [s["kind"] for s in out.steps] == ["model", "tool", "model"]
    assert out.steps[1]["tool"] == "ask_orders"
    assert out.input_tokens > 100 and out.output_tokens > 10
    assert out.cost_usd > 0
    runs = await store.list_runs()
    orders_run = next(r for r in runs if r.agent == "orders")
    assert orders_run.caller_chain == ["support"]
    assert orders_run.identity == "svc-orders@acme"
    assert orders_run.status == "completed"
    record = await store.get_run("run_t1")
    assert record is not None and record.status == "completed"
    assert record.input_tokens == out.input_tokens


async def test_refund_writes_the_ledger_once(inproc: InProcessFleet, example_fleet: Fleet) -> None:
    out = await inproc.invoke(run_input("support", "Please refund order 1042, it arrived broken"))
    assert out.status == "completed", out.error
    assert "of $149.0 for order 1042 has been issued" in (out.output or "")
    with sqlite3.connect(example_fleet.state_path("ledger.db")) as conn:
        rows = conn.execute("SELECT order_id, amount_usd, agent FROM refunds").fetchall()
    assert rows == [("1042", 149.0, "refunds")]


async def test_audit_records_every_stage_with_the_caller_chain(
    inproc: InProcessFleet, store: SQLiteStore
) -> None:
    await inproc.invoke(run_input("support", "where is order 1042?"))
    top = await store.query_audit(AuditQuery(run_id="run_t1"))
    assert [r.kind for r in top] == [
        "prompt",
        "model_call",
        "reasoning",
        "tool_call",
        "backend_response",
        "model_call",
        "action",
    ]
    assert {r.identity for r in top} == {"svc-support@acme"}
    assert top[0].payload["prompt_version"] == "2"
    assert top[-1].payload["text"].startswith("Order 1042")
    inner = await store.query_audit(AuditQuery(agent="orders"))
    assert inner and all(r.payload.get("caller_chain") == ["support"] for r in inner)
    assert {r.identity for r in inner} == {"svc-orders@acme"}
    verdict = await store.verify_audit()
    assert verdict.ok, verdict


async def test_one_trace_per_run_with_parented_spans(
    inproc: InProcessFleet, spans: InMemorySpanExporter
) -> None:
    await inproc.invoke(run_input("support", "where is order 1042?"))
    finished = spans.get_finished_spans()
    assert len({s.context.trace_id for s in finished}) == 1
    by_id = {s.context.span_id: s for s in finished}
    names = sorted(s.name for s in finished)
    assert "invoke_agent support" in names and "invoke_agent orders" in names
    assert "execute_tool ask_orders" in names and "execute_tool lookup_order" in names
    # The delegated agent's run hangs under the tool span that delegated to it.
    orders_span = next(s for s in finished if s.name == "invoke_agent orders")
    assert orders_span.parent is not None
    assert by_id[orders_span.parent.span_id].name == "execute_tool ask_orders"
    chat = [s for s in finished if s.attributes and s.attributes.get("gen_ai.operation.name") == "chat"]
    assert chat and all(s.attributes and "raygent.prompt.sha256" in s.attributes for s in chat)


async def test_session_context_round_trips_through_the_store(
    inproc: InProcessFleet, store: SQLiteStore
) -> None:
    first = await inproc.invoke(run_input("support", "hello", session="abc", run_id="r1"))
    second = await inproc.invoke(run_input("support", "hello", session="abc", run_id="r2"))
    assert first.status == second.status == "completed"
    session = await store.get_session("abc")
    assert session is not None
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    # The second run saw the first turn, so its prompt was longer.
    assert second.input_tokens > first.input_tokens


async def test_concurrent_runs_on_one_session_lose_no_turn(
    inproc: InProcessFleet, store: SQLiteStore
) -> None:
    outs = await asyncio.gather(
        *(inproc.invoke(run_input("support", "hello", session="busy", run_id=f"c{i}")) for i in range(6))
    )
    assert [o.status for o in outs] == ["completed"] * 6, [o.error for o in outs]
    session = await store.get_session("busy")
    assert session is not None and len(session.messages) == 12


async def test_input_longer_than_the_agent_accepts_fails_clearly(inproc: InProcessFleet) -> None:
    out = await inproc.invoke(run_input("support", "x" * 16_001))
    assert out.status == "failed"
    assert out.error is not None and out.error["status"] == 422
    assert "16001 characters" in out.error["detail"]


def make_fleet(
    tmp_path: Path, agents: dict[str, Any], tools: dict[str, Any], rules: list[dict[str, Any]], **model: Any
) -> Fleet:
    return Fleet.model_validate(
        {
            "name": "t",
            "models": {"m": {"kind": "offline", "tier": "standard", "rules": rules, **model}},
            "prompts": {"p": {"versions": {"1": "You are $agent."}}},
            "tools": tools,
            "agents": {
                name: {"identity": f"svc-{name}", "prompt": "p@1", **spec} for name, spec in agents.items()
            },
            "base_dir": str(EXAMPLE_DIR),
            "state_dir": str(tmp_path / "state"),
        }
    )


async def _run(fleet: Fleet, req: RunInput, provider: TracerProvider) -> tuple[RunOutput, SQLiteStore]:
    store = SQLiteStore(fleet.state_path("raygent.db"))
    inproc = InProcessFleet(fleet, store=store, tracer=provider.get_tracer("t"), clock=SystemClock())
    try:
        return await inproc.invoke(req), store
    finally:
        await inproc.aclose()


async def test_delegation_cycle_is_refused(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = make_fleet(
        tmp_path,
        agents={"a": {"tools": ["ask_b"]}, "b": {"tools": ["ask_a"]}},
        tools={"ask_a": {"kind": "agent", "agent": "a"}, "ask_b": {"kind": "agent", "agent": "b"}},
        rules=[
            {"match": "ping", "call": "ask_b", "args": {"input": "{user}"}},
            {"match": "ping", "call": "ask_a", "args": {"input": "{user}"}},
            {"after_tool": "ask_a", "say": "b heard: {result.error}"},
            {"after_tool": "ask_b", "say": "{result.answer}"},
        ],
    )
    out, store = await _run(fleet, run_input("a", "ping"), tracer_provider)
    assert out.status == "completed"
    assert "delegation cycle: a -> b -> a" in (out.output or "")
    errors = await store.query_audit(AuditQuery(kind="error"))
    assert any(r.agent == "a" and r.payload.get("caller_chain") == ["a", "b"] for r in errors)


async def test_delegation_depth_is_bounded(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = make_fleet(
        tmp_path,
        agents={"a": {"tools": ["ask_b"]}, "b": {"tools": ["ask_c"]}, "c": {"max_delegation_depth": 1}},
        tools={"ask_b": {"kind": "agent", "agent": "b"}, "ask_c": {"kind": "agent", "agent": "c"}},
        rules=[
            {"match": "go", "call": "ask_b", "args": {"input": "{user}"}},
            {"match": "go", "call": "ask_c", "args": {"input": "{user}"}},
            {"after_tool": "ask_c", "say": "b heard: {result.error}"},
            {"after_tool": "ask_b", "say": "{result.answer}"},
            {"match": "go", "say": "c answered"},
        ],
    )
    out, _ = await _run(fleet, run_input("a", "go"), tracer_provider)
    assert "deeper than 1" in (out.output or "")


async def test_max_steps_fails_the_run(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = make_fleet(
        tmp_path,
        agents={"loop": {"tools": ["lookup_order"], "max_steps": 3}},
        tools={
            "lookup_order": {
                "kind": "python",
                "entrypoint": "tools.py:lookup_order",
                "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
            }
        },
        rules=[
            {"call": "lookup_order", "args": {"order_id": "1042"}},
            {"after_tool": "lookup_order", "call": "lookup_order", "args": {"order_id": "1042"}},
        ],
    )
    out, store = await _run(fleet, run_input("loop", "anything"), tracer_provider)
    assert out.status == "failed"
    assert out.error is not None and out.error["type"].endswith("max-steps-exceeded")
    assert len([s for s in out.steps if s["kind"] == "model"]) == 3
    record = await store.get_run(out.run_id)
    assert record is not None and record.status == "failed" and record.error == out.error


async def test_deadline_times_the_run_out(tmp_path: Path, tracer_provider: TracerProvider) -> None:
    fleet = make_fleet(tmp_path, agents={"slow": {"deadline_s": 0.3}}, tools={}, rules=[], latency_ms=5000)
    started = time.monotonic()
    out, store = await _run(fleet, run_input("slow", "hi"), tracer_provider)
    assert time.monotonic() - started < 4  # the 5 s model call was abandoned at the deadline
    assert out.status == "timed_out"
    assert out.error is not None and out.error["status"] == 504
    record = await store.get_run(out.run_id)
    assert record is not None and record.status == "timed_out"


async def test_unreachable_model_fails_the_run_with_a_problem(
    tmp_path: Path, tracer_provider: TracerProvider
) -> None:
    fleet = Fleet.model_validate(
        {
            "name": "t",
            "models": {
                "remote": {
                    "kind": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "model": "x",
                    "timeout_s": 2,
                }
            },
            "prompts": {"p": {"versions": {"1": "hi"}}},
            "agents": {"a": {"identity": "svc-a", "prompt": "p@1"}},
            "base_dir": str(EXAMPLE_DIR),
            "state_dir": str(tmp_path / "state"),
        }
    )
    out, store = await _run(fleet, run_input("a", "hello"), tracer_provider)
    assert out.status == "failed"
    assert out.error is not None and out.error["status"] in (502, 503)
    kinds = [r.kind for r in await store.query_audit(AuditQuery(run_id=out.run_id))]
    assert kinds[0] == "prompt" and "error" in kinds


@pytest.mark.parametrize(
    ("roles", "limit", "kept"),
    [
        (["user", "assistant"], 10, ["user", "assistant"]),
        (["user", "assistant", "tool", "assistant", "user", "assistant"], 3, ["user", "assistant"]),
        (["user", "assistant", "user", "assistant"], 2, ["user", "assistant"]),
        (["user", "assistant"], 0, []),
    ],
)
def test_trim_history_cuts_at_user_turns(roles: list[str], limit: int, kept: list[str]) -> None:
    messages = [{"role": r, "content": str(i)} for i, r in enumerate(roles)]
    trimmed = trim_history(messages, limit)
    assert [m["role"] for m in trimmed] == kept
    assert len(trimmed) <= limit
