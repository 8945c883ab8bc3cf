"""The router against real local HTTP servers that are slow, failing or rate limited on purpose.

Backends are OpenAI-compatible servers on free loopback ports: raygent's own server in front of the
offline model (the healthy premium backend) and a small FastAPI app whose behaviour each test switches
(ok, 500, 429 with Retry-After, slow). Every assertion is on routing outcomes and server hit counts;
latencies only matter where they differ by an order of magnitude from the budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.budget import SQLiteLedger
from raygent.core.clock import SystemClock
from raygent.core.config import OfflineModelSpec, OpenAIModelSpec
from raygent.core.errors import BudgetExceededError
from raygent.core.interceptors import CallContext, ModelCallInput, ModelCallOutput
from raygent.core.messages import Message
from raygent.core.routing import (
    BreakerSpec,
    BudgetLimitSpec,
    BudgetsSpec,
    RetrySpec,
    RouterSpec,
    TierRouteSpec,
)
from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditQuery
from raygent.router.actor import build_model_chain
from raygent.router.budget import BudgetModelInterceptor
from raygent.router.model import StreamDelta
from raygent.router.offline import OfflineModel
from raygent.router.openai_compat import OpenAICompatModel
from raygent.router.openai_server import build_openai_app
from raygent.router.router import Router

pytestmark = pytest.mark.integration

Serve = Callable[[FastAPI], AbstractContextManager[str]]


@dataclass
class Behaviour:
    """What the misbehaving server does next; tests flip it between calls."""

    mode: str = "ok"  # ok | fail | ratelimit | slow
    delay_s: float = 0.0
    retry_after: str = "1"
    hits: int = 0
    log: list[str] = field(default_factory=list)


def misbehaving_app(b: Behaviour) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        body = await request.json()
        b.hits += 1
        b.log.append(b.mode)
        if b.delay_s:
            await asyncio.sleep(b.delay_s)
        if b.mode == "fail":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if b.mode == "ratelimit":
            return JSONResponse(
                {"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": b.retry_after}
            )
        if body.get("stream"):
            chunk = '{"choices":[{"index":0,"delta":{"content":"open answer"},"finish_reason":"stop"}]}'
            usage = '{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}'

            async def events() -> Any:
                for line in (chunk, usage, "[DONE]"):
                    yield f"data: {line}\n\n".encode()

            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse(
            {
                "model": "open-7b",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "open answer"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3},
            }
        )

    return app


def premium_app() -> FastAPI:
    spec = OfflineModelSpec(kind="offline", fallback_say="premium answer", latency_ms=5)
    return build_openai_app({"premium": OfflineModel("premium", spec)})


def openai_spec(base_url: str, model: str, tier: str, cin: float, cout: float, **kw: Any) -> OpenAIModelSpec:
    return OpenAIModelSpec(
        kind="openai",
        base_url=base_url,
        model=model,
        tier=tier,  # type: ignore[arg-type]
        cost_per_1k_input_usd=cin,
        cost_per_1k_output_usd=cout,
        **kw,
    )


def call(budget_ms: float | None = None, *, session: str = "s-1") -> ModelCallInput:
    ctx = CallContext(
        run_id=f"run-{time.monotonic_ns()}",
        session_id=session,
        agent="support",
        identity="svc@acme",
        tier="premium",
    )
    return ModelCallInput(
        ctx=ctx, messages=(Message("user", "where is my parcel?"),), latency_budget_ms=budget_ms
    )


def router_for(
    premium_url: str, open_url: str, config: RouterSpec, *, output_cap: int | None = None, **open_kw: Any
) -> Router:
    specs = {
        "open": openai_spec(open_url, "open-7b", "cheap", 0.1, 0.2, expected_latency_ms=40, **open_kw),
        "premium": openai_spec(premium_url, "premium", "premium", 2.5, 10.0, expected_latency_ms=120),
    }
    models = {name: OpenAICompatModel(name, spec) for name, spec in specs.items()}
    return Router(models, specs, clock=SystemClock(), config=config, output_cap_tokens=output_cap)


ROUTE = TierRouteSpec(strategy="latency_budget", fallbacks=["premium"])


async def test_latency_budget_moves_off_a_backend_whose_live_p95_got_slow(http_server: Serve) -> None:
    slow = Behaviour(delay_s=0.0)
    with http_server(premium_app()) as premium_url, http_server(misbehaving_app(slow)) as open_url:
        router = router_for(premium_url, open_url, RouterSpec(routes={"premium": ROUTE}, min_samples=4))
        first = await router.call_model(call(budget_ms=1000))
        assert first.backend == "open"  # cheapest, and its prior (40 ms) fits
        slow.delay_s = 1.5  # the open model degrades: each call now takes 1.5 s, over the budget
        for _ in range(4):
            await router.call_model(call(budget_ms=1000))
        assert router.stats()["open"].latency_p95_ms >= 1000
        moved = await router.call_model(call(budget_ms=1000))
        assert moved.backend == "premium"
        assert "latency_budget=1000ms: premium cheapest that fits" in moved.route_reason
        # A batch call with a generous budget still goes to the cheap backend.
        assert (await router.call_model(call(budget_ms=10_000))).backend == "open"
        await router.aclose()


async def test_failing_backend_falls_back_opens_the_breaker_and_recovers_by_probe(http_server: Serve) -> None:
    failing = Behaviour(mode="fail")
    config = RouterSpec(
        routes={"premium": ROUTE},
        breaker=BreakerSpec(min_calls=3, window_calls=10, error_rate_threshold=0.5, open_s=0.5),
    )
    with http_server(premium_app()) as premium_url, http_server(misbehaving_app(failing)) as open_url:
        router = router_for(premium_url, open_url, config)
        outs = [await router.call_model(call(budget_ms=5000)) for _ in range(5)]
        assert all(o.backend == "premium" and o.text == "premium answer" for o in outs)
        assert outs[0].route_reason.startswith(
            "fallback: open unavailable (ModelUnavailableError) -> premium"
        )
        assert failing.hits == 3  # the breaker opened after 3 failures; calls 4 and 5 skipped it
        assert outs[4].route_reason.startswith("skipped open (open) -> premium")
        assert router.breaker_state("open") == "open"
        await asyncio.sleep(0.6)
        failing.mode = "ok"
        probe = await router.call_model(call(budget_ms=5000))
        assert probe.backend == "open" and router.breaker_state("open") == "closed"
        await router.aclose()


async def test_rate_limited_backend_cools_down_for_retry_after(http_server: Serve) -> None:
    limited = Behaviour(mode="ratelimit", retry_after="1")
    with http_server(premium_app()) as premium_url, http_server(misbehaving_app(limited)) as open_url:
        router = router_for(premium_url, open_url, RouterSpec(routes={"premium": ROUTE}))
        first = await router.call_model(call(budget_ms=5000))
        assert first.backend == "premium" and limited.hits == 1
        second = await router.call_model(call(budget_ms=5000))
        assert second.route_reason.startswith("skipped open (cooling down)") and limited.hits == 1
        limited.mode = "ok"
        await asyncio.sleep(1.1)  # Retry-After: 1
        assert (await router.call_model(call(budget_ms=5000))).backend == "open"
        assert limited.hits == 2
        await router.aclose()


async def test_per_call_timeout_on_a_hanging_backend(http_server: Serve) -> None:
    hanging = Behaviour(delay_s=5)
    with http_server(premium_app()) as premium_url, http_server(misbehaving_app(hanging)) as open_url:
        router = router_for(premium_url, open_url, RouterSpec(routes={"premium": ROUTE}), timeout_s=0.3)
        out = await router.call_model(call(budget_ms=5000))
        assert out.backend == "premium"
        assert out.route_reason.startswith("fallback: open timed out (ModelTimeoutError) -> premium")
        assert router.stats()["open"].errors == 1
        await router.aclose()


async def test_stream_falls_back_before_the_first_delta(http_server: Serve) -> None:
    failing = Behaviour(mode="fail")
    with http_server(premium_app()) as premium_url, http_server(misbehaving_app(failing)) as open_url:
        router = router_for(premium_url, open_url, RouterSpec(routes={"premium": ROUTE}))
        events = [e async for e in router.stream_model(call(budget_ms=5000))]
        text = "".join(e.text for e in events if isinstance(e, StreamDelta))
        final = events[-1]
        assert isinstance(final, ModelCallOutput) and final.backend == "premium" and text == final.text
        failing.mode = "ok"
        events = [e async for e in router.stream_model(call(budget_ms=5000))]
        final = events[-1]
        assert isinstance(final, ModelCallOutput) and final.backend == "open"
        assert router.stats()["open"].ttft_p50_ms > 0
        await router.aclose()


async def test_retry_budget_spreads_retries_of_one_flaky_backend(http_server: Serve) -> None:
    flaky = Behaviour(mode="fail")
    config = RouterSpec(
        routes={"cheap": TierRouteSpec(strategy="fixed", model="open")},
        retry=RetrySpec(max_attempts=3, budget_ratio=0.0, min_retries_per_s=0.0, base_backoff_ms=1),
        breaker=BreakerSpec(min_calls=1000, window_calls=1000),
    )
    with http_server(premium_app()) as premium_url, http_server(misbehaving_app(flaky)) as open_url:
        router = router_for(premium_url, open_url, config)
        cheap = call()
        cheap = ModelCallInput(ctx=cheap.ctx.child(tier="cheap"), messages=cheap.messages)
        with pytest.raises(Exception, match="retry budget is spent"):
            await router.call_model(cheap)
        assert flaky.hits == 1  # no retry budget: one attempt, no retry storm
        await router.aclose()


async def test_budget_refusal_is_a_429_and_audited(http_server: Serve, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    ledger = SQLiteLedger(tmp_path / "budgets.db")
    # Each call reserves its worst case (~300 tokens) and commits what it used (15): room for a few.
    budgets = BudgetsSpec(per_session=BudgetLimitSpec(max_tokens=400), expected_output_tokens=256)
    with http_server(premium_app()) as premium_url, http_server(misbehaving_app(Behaviour())) as open_url:
        config = RouterSpec(routes={"premium": ROUTE})
        router = router_for(premium_url, open_url, config, output_cap=budgets.expected_output_tokens)
        prices = [openai_spec(premium_url, "premium", "premium", 2.5, 10.0)]
        interceptor = BudgetModelInterceptor(ledger, budgets, prices)
        tracer = TracerProvider().get_tracer("t")
        chain = build_model_chain(router, store=store, tracer=tracer, clock=SystemClock(), budget=interceptor)
        admitted = 0
        with pytest.raises(BudgetExceededError) as caught:
            for _ in range(20):
                await chain.call_model(call(budget_ms=5000, session="s-budget"))
                admitted += 1
        assert 1 <= admitted < 20
        assert caught.value.status == 429 and caught.value.extra["scope"] == "session:s-budget"
        spend = await ledger.spend("session:s-budget")
        assert spend.reserved_tokens == 0 and 0 < spend.spent_tokens <= 400
        errors = await store.query_audit(AuditQuery(kind="error"))
        assert errors and errors[-1].payload["error_type"] == "budget-exceeded"
        await router.aclose()
    await ledger.close()
    await store.close()
