"""P2: routing decision time and per-call overhead, raygent Router vs LiteLLM Router, in one run.

Both routers see three deployments of one model group with mock responses (no network):

* **decision**: raygent ``Router.decide`` (the ``latency_budget`` strategy over warm live stats, and the
  spine's ``tier`` order) vs LiteLLM ``Router.select`` (``simple-shuffle`` and ``latency-based-routing``).
* **per-call overhead**: a whole routed call whose backend answers at once: raygent ``call_model`` on
  an in-memory backend vs LiteLLM ``acompletion(..., mock_response=...)``; raygent's bare backend call
  time is subtracted, LiteLLM's mock has no backend to subtract.

Targets (issue 6): decision p50 ≤ 50 µs and ≤ 0.5 x LiteLLM; per-call overhead ≤ 0.25 x LiteLLM.

    .venv/bin/python -m benchmarks.router_p2 [--decisions 20000] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import time
from collections.abc import AsyncIterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: the bundled price map

from benchmarks.router_common import summary_us, write
from raygent.core.clock import SystemClock
from raygent.core.config import OfflineModelSpec
from raygent.core.interceptors import CallContext, ModelCallInput
from raygent.core.messages import Message, Usage
from raygent.core.routing import RouterSpec, TierRouteSpec
from raygent.router.model import ModelRequest, ModelResponse, StreamEvent
from raygent.router.router import Router

MESSAGES = [{"role": "user", "content": "Where is my parcel 48213? It was due yesterday."}]


class Instant:
    """A backend that answers at once (the equivalent of LiteLLM's mock_response)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._response = ModelResponse("hi", (), Usage(20, 2), name, "stop")

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return self._response

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def raygent_router(strategy: str) -> Router:
    prices = [(0.0025, 0.01, 900.0), (0.00015, 0.0006, 450.0), (0.0001, 0.0002, 250.0)]
    specs = {
        f"d{i}": OfflineModelSpec(
            kind="offline",
            tier="standard",
            cost_per_1k_input_usd=cin,
            cost_per_1k_output_usd=cout,
            expected_latency_ms=ms,
        )
        for i, (cin, cout, ms) in enumerate(prices)
    }
    config = RouterSpec(routes={"standard": TierRouteSpec(strategy=strategy)}) if strategy != "tier" else None  # type: ignore[arg-type]
    router = Router(
        {n: Instant(n) for n in specs}, specs, clock=SystemClock(), config=config, rng=random.Random(0)
    )
    # Warm the live stats the way traffic would: a full window of latencies per backend.
    rng = random.Random(1)
    for name in specs:
        stats = router._stats[name]  # benchmark set-up reaches into the router's own stats
        for _ in range(256):
            stats.begin()
            stats.end(rng.lognormvariate(-1.0, 0.5), ok=rng.random() > 0.01, output_tokens=200)
    return router


def call_input() -> ModelCallInput:
    ctx = CallContext(run_id="r", session_id="s", agent="support", identity="svc@acme", tier="standard")
    return ModelCallInput(
        ctx=ctx, messages=(Message("user", MESSAGES[0]["content"]),), latency_budget_ms=1500
    )


def litellm_router(strategy: str) -> Any:
    from litellm import Router as LiteLLMRouter

    model_list = [
        {
            "model_name": "group",
            "litellm_params": {
                "model": f"openai/m{i}",
                "api_key": "sk-bench",
                "api_base": "http://127.0.0.1:9/v1",
                "mock_response": "hi",
            },
            "model_info": {"id": f"d{i}"},
        }
        for i in range(3)
    ]
    return LiteLLMRouter(model_list=model_list, routing_strategy=strategy, num_retries=0)


def time_sync(fn: Any, n: int) -> list[float]:
    out = []
    perf = time.perf_counter
    for _ in range(n):
        t0 = perf()
        fn()
        out.append(perf() - t0)
    return out


async def time_async(fn: Any, n: int) -> list[float]:
    out = []
    perf = time.perf_counter
    for _ in range(n):
        t0 = perf()
        await fn()
        out.append(perf() - t0)
    return out


async def run(decisions: int, calls: int) -> dict[str, Any]:
    results: dict[str, Any] = {"decision": {}, "call": {}}
    inp = call_input()
    gc.collect()
    for strategy in ("latency_budget", "tier"):
        router = raygent_router(strategy)
        time_sync(lambda router=router: router.decide(inp), 1000)  # warm-up
        results["decision"][f"raygent/{strategy}"] = summary_us(
            time_sync(lambda router=router: router.decide(inp), decisions)
        )
    for strategy in ("simple-shuffle", "latency-based-routing"):
        lrouter = litellm_router(strategy)
        for _ in range(20):  # warm-up, and gives latency-based routing its latency data
            await lrouter.acompletion(model="group", messages=MESSAGES)

        async def select(lrouter: Any = lrouter) -> Any:
            return await lrouter.select("group", {}, messages=MESSAGES)

        await time_async(select, 200)
        results["decision"][f"litellm/{strategy}"] = summary_us(await time_async(select, decisions // 4))
        results["call"][f"litellm/{strategy}"] = summary_us(
            await time_async(
                lambda lrouter=lrouter: lrouter.acompletion(model="group", messages=MESSAGES), calls
            )
        )
    router = raygent_router("latency_budget")
    backend = Instant("d0")
    request = ModelRequest(messages=inp.messages)
    bare = summary_us(await time_async(lambda: backend.complete(request), calls))
    await time_async(lambda: router.call_model(inp), 200)
    full = summary_us(await time_async(lambda: router.call_model(inp), calls))
    results["call"]["raygent/latency_budget"] = {
        **full,
        "overhead_p50_us": full["p50_us"] - bare["p50_us"],
        "overhead_p99_us": full["p99_us"] - bare["p99_us"],
        "bare_backend_p50_us": bare["p50_us"],
    }
    return results


def ratios(results: dict[str, Any]) -> dict[str, float]:
    dec, call = results["decision"], results["call"]
    ours = dec["raygent/latency_budget"]["p50_us"]
    overhead = call["raygent/latency_budget"]["overhead_p50_us"]
    return {
        "decision_p50_vs_litellm_simple_shuffle": ours / dec["litellm/simple-shuffle"]["p50_us"],
        "decision_p50_vs_litellm_latency_based": ours / dec["litellm/latency-based-routing"]["p50_us"],
        "call_overhead_p50_vs_litellm_simple_shuffle": overhead / call["litellm/simple-shuffle"]["p50_us"],
        "call_overhead_p50_vs_litellm_latency_based": overhead
        / call["litellm/latency-based-routing"]["p50_us"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=2_000)
    args = parser.parse_args()
    started = time.monotonic()
    results = asyncio.run(run(args.decisions, args.calls))
    r = ratios(results)
    print(f"{'decision':38} {'p50 µs':>10} {'p99 µs':>10}")
    for name, s in results["decision"].items():
        print(f"{name:38} {s['p50_us']:10.1f} {s['p99_us']:10.1f}")
    print(f"\n{'whole call (mock backend)':38} {'p50 µs':>10} {'p99 µs':>10} {'calls/s':>10}")
    for name, s in results["call"].items():
        print(f"{name:38} {s['p50_us']:10.1f} {s['p99_us']:10.1f} {1e6 / s['mean_us']:10.0f}")
    ours = results["call"]["raygent/latency_budget"]
    print(
        f"raygent overhead (minus bare backend {ours['bare_backend_p50_us']:.1f} µs): "
        f"p50 {ours['overhead_p50_us']:.1f} µs"
    )
    print("\nratios (raygent / LiteLLM; targets: decision ≤ 0.5, call overhead ≤ 0.25)")
    for name, value in r.items():
        print(f"  {name:48} {value:.3f}")
    decision_p50 = results["decision"]["raygent/latency_budget"]["p50_us"]
    targets = {
        "decision_p50_le_50us": decision_p50 <= 50,
        "decision_le_half_litellm": max(
            r["decision_p50_vs_litellm_simple_shuffle"], r["decision_p50_vs_litellm_latency_based"]
        )
        <= 0.5,
        "overhead_le_quarter_litellm": max(
            r["call_overhead_p50_vs_litellm_simple_shuffle"], r["call_overhead_p50_vs_litellm_latency_based"]
        )
        <= 0.25,
    }
    print(f"targets met: {targets}")
    path = write(
        "router_p2",
        {
            "args": vars(args),
            "results": results,
            "ratios": r,
            "targets_met": targets,
            "wall_s": time.monotonic() - started,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
