"""The router deployment's streamed model calls go through the same budget and audit stages as
``call_model`` (a client must not escape its session budget by asking for a stream)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from raygent.core.config import Fleet
from raygent.core.errors import BudgetExceededError
from raygent.core.interceptors import CallContext, ModelCallInput, ModelCallOutput
from raygent.core.messages import Message
from raygent.core.store import open_store
from raygent.core.store.base import AuditQuery
from raygent.router.model import StreamDelta
from raygent.serve.replicas import ServedRouter


def fleet(state: Path, max_tokens: int) -> Fleet:
    return Fleet.model_validate(
        {
            "name": "stream-budget",
            "models": {"m": {"kind": "offline", "rules": [{"match": ".", "say": "your order ships today"}]}},
            "prompts": {"p": {"versions": {"1": "Be brief."}}},
            "agents": {"desk": {"identity": "svc-desk@acme", "prompt": "p@1"}},
            "router": {"budgets": {"per_session": {"max_tokens": max_tokens}, "expected_output_tokens": 16}},
            "state_dir": str(state),
        }
    )


def call(session: str, run: str) -> ModelCallInput:
    ctx = CallContext(
        run_id=run, session_id=session, agent="desk", identity="svc-desk@acme", deadline_ts=time.time() + 30
    )
    return ModelCallInput(ctx=ctx, messages=(Message("user", "where is my order?"),))


async def stream(router: ServedRouter, inp: ModelCallInput) -> tuple[str, ModelCallOutput]:
    text, final = "", None
    async for event in router.stream_model(inp):
        if isinstance(event, StreamDelta):
            text += event.text
        else:
            final = event
    assert final is not None
    return text, final


async def test_streamed_calls_spend_the_session_budget(tmp_path: Path) -> None:
    router = ServedRouter(fleet(tmp_path, max_tokens=200))
    try:
        text, final = await stream(router, call("s-1", "r1"))
        assert text == final.text == "your order ships today"
        assert router._ledger is not None
        spent = await router._ledger.spend("session:s-1")
        assert spent.spent_tokens == final.usage.input_tokens + final.usage.output_tokens > 0
        assert spent.reserved_tokens == 0
        # Streams keep spending the same budget until it has no room left for another call.
        with pytest.raises(BudgetExceededError):
            for n in range(2, 40):
                await stream(router, call("s-1", f"r{n}"))
        # Another session's budget is untouched.
        _, other = await stream(router, call("s-2", "r-other"))
        assert other.text == "your order ships today"
    finally:
        await router.aclose()


async def test_a_refused_stream_is_audited_and_yields_no_text(tmp_path: Path) -> None:
    router = ServedRouter(fleet(tmp_path, max_tokens=0))
    deltas: list[str] = []
    try:
        with pytest.raises(BudgetExceededError):
            async for event in router.stream_model(call("s-1", "r1")):
                if isinstance(event, StreamDelta):
                    deltas.append(event.text)
    finally:
        await router.aclose()
    assert deltas == []
    store = open_store(fleet(tmp_path, max_tokens=0))
    errors = await store.query_audit(AuditQuery(kind="error", limit=10))
    await store.close()
    assert [e.payload["error_type"] for e in errors] == ["budget-exceeded"]
