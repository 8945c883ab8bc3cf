"""P5: a seeded mixed workload (interactive + batch) over simulated backends, routed vs always-premium.

The seed's logistics case: customers ask for parcel status (simple, interactive: an open model is
enough), some conversations turn into exception handling (damaged goods, customs holds, reroutes:
interactive, must go to the premium model), and nightly batch work (ETA recomputation, route
summaries) runs beside them on the cheapest backend. Every session has a token budget; a few
runaway sessions hit it.

Backends are simulated with realistic price and latency profiles (list prices per 1k tokens; lognormal
base latency plus per-output-token time; the in-cluster vLLM model has 16 slots and queues beyond
them; hosted APIs answer 429 with Retry-After above a concurrency limit and fail 0.5-1% of calls).
The event loop runs on *virtual time* (:class:`VirtualTimeLoop`: when nothing is ready, the clock
jumps to the next timer), so every sleep, timeout, breaker window and latency stat sees simulated time,
the result does not depend on how busy the host is, and the run takes seconds; latencies are simulated
milliseconds (the router's own CPU time is measured by P2, not here). The same seeded workload runs
twice in one process: through raygent's router (latency-budget / fixed / cost routes, breakers,
retries, the SQLite budget ledger) and through an always-premium router (every call fixed to premium,
same ledger).

Targets (issue 6): cost ≤ 0.5 x always-premium; ≥ 99 % of interactive requests within their budget.

    .venv/bin/python -m benchmarks.router_p5 [--sessions 400] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import re
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.router_common import pct, write
from raygent.core.budget import SQLiteLedger
from raygent.core.config import OfflineModelSpec
from raygent.core.errors import BudgetExceededError, ModelError
from raygent.core.interceptors import CallContext, ModelCallInput
from raygent.core.messages import Message, Usage
from raygent.core.routing import BudgetLimitSpec, BudgetsSpec, RouterSpec, TierRouteSpec
from raygent.router.budget import BudgetModelInterceptor
from raygent.router.errors import ModelUnavailableError
from raygent.router.model import ModelRequest, ModelResponse, StreamEvent
from raygent.router.router import Router

_OUT = re.compile(r"\[out=(\d+)\]")
_EPOCH = 1_800_000_000.0


class VirtualTimeLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """An event loop whose clock jumps to the next timer whenever no callback is ready."""

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def _run_once(self) -> None:
        scheduled = self._scheduled  # type: ignore[attr-defined]
        if not self._ready and scheduled:  # type: ignore[attr-defined]
            self._virtual_now = max(self._virtual_now, scheduled[0]._when)
        super()._run_once()  # type: ignore[misc]


class LoopClock:
    """The router's and ledger's clock, read from the running (virtual-time) loop."""

    def now(self) -> float:
        return _EPOCH + asyncio.get_running_loop().time()

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()


@dataclass(frozen=True)
class Profile:
    """A backend's simulated behaviour and list price (per 1k tokens)."""

    label: str
    tier: str
    cost_in: float
    cost_out: float
    median_ms: float
    sigma: float
    ms_per_output_token: float
    error_rate: float
    slots: int | None = None  # in-cluster: concurrent sequences, more queue
    rate_limit_concurrency: int | None = None  # hosted: above this, 429
    retry_after_s: float = 1.0


PROFILES = {
    "premium": Profile(
        "hosted frontier model (GPT-4o-class list price)",
        "premium",
        0.0025,
        0.010,
        700,
        0.35,
        12,
        0.005,
        rate_limit_concurrency=48,
    ),
    "fast": Profile(
        "hosted small model (GPT-4o-mini-class list price)",
        "standard",
        0.00015,
        0.0006,
        350,
        0.35,
        6,
        0.005,
        rate_limit_concurrency=64,
    ),
    "open": Profile(
        "Llama-3.1-8B on in-cluster vLLM (amortised GPU-hour)",
        "cheap",
        0.0001,
        0.0002,
        150,
        0.30,
        4,
        0.01,
        slots=16,
    ),
}


class SimBackend:
    """A backend with the latency, errors, rate limits and slots of its profile."""

    def __init__(self, name: str, profile: Profile, seed: int) -> None:
        self._name = name
        self.p = profile
        self._rng = random.Random(seed)
        self._slots = asyncio.Semaphore(profile.slots) if profile.slots else None
        self.in_flight = 0
        self.calls = Counter[str]()

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if self.p.rate_limit_concurrency is not None and self.in_flight >= self.p.rate_limit_concurrency:
            self.calls["429"] += 1
            raise ModelUnavailableError(
                f"{self._name} rate limited",
                retry_after_s=self.p.retry_after_s,
                extra={"http_status": 429},
            )
        self.in_flight += 1
        try:
            if self._slots is None:
                return await self._serve(request)
            async with self._slots:
                return await self._serve(request)
        finally:
            self.in_flight -= 1

    async def _serve(self, request: ModelRequest) -> ModelResponse:
        text = request.messages[-1].content
        match = _OUT.search(text)
        wanted = int(match.group(1)) if match else 50
        output = min(wanted, request.max_output_tokens or wanted)
        base = self._rng.lognormvariate(math.log(self.p.median_ms), self.p.sigma)
        latency_ms = base + output * self.p.ms_per_output_token
        if self._rng.random() < self.p.error_rate:
            await asyncio.sleep(latency_ms * 0.3 / 1000)
            self.calls["error"] += 1
            raise ModelUnavailableError(f"{self._name} failed", extra={"http_status": 502})
        await asyncio.sleep(latency_ms / 1000)
        self.calls["ok"] += 1
        prompt = sum(len(m.content) for m in request.messages) // 4 + 4 * len(request.messages)
        return ModelResponse("ok", (), Usage(prompt, output), self._name, "stop")

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class Req:
    at_s: float  # simulated arrival time
    kind: str  # status | exception | batch
    tier: str
    session: str
    input_tokens: int
    output_tokens: int
    budget_ms: float | None


BUDGET_MS = {"status": 2500.0, "exception": 8000.0, "batch": None}
TIER = {"status": "standard", "exception": "premium", "batch": "cheap"}


def workload(sessions: int, seed: int, rate_per_s: float) -> list[Req]:
    """Seeded customer sessions (status checks, some turning into exceptions) plus batch work."""
    rng = random.Random(seed)
    out: list[Req] = []
    t = 0.0
    for i in range(sessions):
        t += rng.expovariate(rate_per_s / 3)  # sessions arrive; each has ~3 requests
        runaway = rng.random() < 0.02
        turns = 30 if runaway else rng.randint(1, 4)
        at = t
        history = 0
        exception = rng.random() < 0.2
        for turn in range(turns):
            kind = "exception" if exception and turn == turns - 1 else "status"
            history += rng.randint(80, 160)
            if kind == "status":
                tokens_in, tokens_out = 250 + history, rng.randint(30, 60)
            else:
                tokens_in, tokens_out = 1200 + history + rng.randint(0, 800), rng.randint(150, 300)
            out.append(Req(at, kind, TIER[kind], f"cust-{i}", tokens_in, tokens_out, BUDGET_MS[kind]))
            at += rng.uniform(4, 15)  # the customer reads and types
        if rng.random() < 0.45:
            out.append(
                Req(
                    t + rng.uniform(0, 5),
                    "batch",
                    "cheap",
                    f"batch-{i}",
                    rng.randint(1500, 3000),
                    rng.randint(200, 500),
                    None,
                )
            )
    return sorted(out, key=lambda r: r.at_s)


def routes(always_premium: bool) -> RouterSpec:
    budgets = BudgetsSpec(per_session=BudgetLimitSpec(max_tokens=12_000), expected_output_tokens=512)
    if always_premium:
        fixed = TierRouteSpec(strategy="fixed", model="premium")
        return RouterSpec(routes={"premium": fixed, "standard": fixed, "cheap": fixed}, budgets=budgets)
    return RouterSpec(
        routes={
            "standard": TierRouteSpec(
                strategy="latency_budget", candidates=["open", "fast"], fallbacks=["premium"]
            ),
            "premium": TierRouteSpec(strategy="fixed", model="premium", fallbacks=["fast"]),
            "cheap": TierRouteSpec(strategy="cost", candidates=["open", "fast"], fallbacks=["premium"]),
        },
        budgets=budgets,
    )


def specs() -> dict[str, OfflineModelSpec]:
    return {
        name: OfflineModelSpec(
            kind="offline",
            tier=p.tier,  # type: ignore[arg-type]
            cost_per_1k_input_usd=p.cost_in,
            cost_per_1k_output_usd=p.cost_out,
            expected_latency_ms=p.median_ms + 50 * p.ms_per_output_token,
            timeout_s=30,
            max_concurrency=p.slots or 64,
        )
        for name, p in PROFILES.items()
    }


def message(req: Req) -> Message:
    words = max(1, req.input_tokens - 8)
    return Message("user", f"[out={req.output_tokens}] " + "parcel " * words)


async def run_config(reqs: list[Req], *, always_premium: bool, seed: int, state: Path) -> dict[str, Any]:
    config = routes(always_premium)
    clock = LoopClock()
    model_specs = specs()
    models = {n: SimBackend(n, p, seed + i) for i, (n, p) in enumerate(PROFILES.items())}
    router = Router(
        models,
        model_specs,
        clock=clock,
        config=config,
        rng=random.Random(seed),
        output_cap_tokens=config.budgets.expected_output_tokens,
    )
    ledger = SQLiteLedger(
        state / f"budgets-{'premium' if always_premium else 'routed'}.db", clock=clock, threaded=False
    )
    chain = BudgetModelInterceptor(ledger, config.budgets, model_specs.values())
    chain.next = router
    results: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(i: int, req: Req) -> None:
        await asyncio.sleep(max(0.0, start + req.at_s - loop.time()))
        ctx = CallContext(
            run_id=f"run-{i}",
            session_id=req.session,
            agent=req.kind,
            identity="svc-logistics@acme",
            tier=req.tier,
        )
        budget = req.budget_ms
        inp = ModelCallInput(ctx=ctx, messages=(message(req),), latency_budget_ms=budget)
        t0 = loop.time()
        row: dict[str, Any] = {"kind": req.kind, "budget_ms": req.budget_ms}
        try:
            out = await chain.call_model(inp)
            row.update(
                ok=True,
                backend=out.backend,
                cost=out.cost_usd,
                tokens_in=out.usage.input_tokens,
                tokens_out=out.usage.output_tokens,
            )
        except BudgetExceededError:
            row.update(ok=False, refused="budget")
        except ModelError as exc:
            row.update(ok=False, refused=type(exc).__name__)
        row["latency_ms"] = (loop.time() - t0) * 1000
        results.append(row)

    await asyncio.gather(*(one(i, r) for i, r in enumerate(reqs)))
    await ledger.close()
    return summarise(results, models)


def summarise(rows: list[dict[str, Any]], models: dict[str, SimBackend]) -> dict[str, Any]:
    ok = [r for r in rows if r["ok"]]
    by_kind: dict[str, Any] = {}
    for kind in ("status", "exception", "batch"):
        lat = [r["latency_ms"] for r in ok if r["kind"] == kind]
        budget = BUDGET_MS[kind]
        within = sum(1 for v in lat if budget is None or v <= budget)
        by_kind[kind] = {
            "served": len(lat),
            "p50_ms": pct(lat, 0.5),
            "p95_ms": pct(lat, 0.95),
            "p99_ms": pct(lat, 0.99),
            "budget_ms": budget,
            "within_budget": within / len(lat) if lat else 1.0,
            "backends": dict(Counter(r["backend"] for r in ok if r["kind"] == kind)),
        }
    interactive = [r for r in ok if r["kind"] != "batch"]
    within = sum(1 for r in interactive if r["latency_ms"] <= r["budget_ms"])
    premium = PROFILES["premium"]
    counterfactual = sum(
        (r["tokens_in"] * premium.cost_in + r["tokens_out"] * premium.cost_out) / 1000 for r in ok
    )
    return {
        "requests": len(rows),
        "served": len(ok),
        "refused": dict(Counter(r.get("refused") for r in rows if not r["ok"])),
        "cost_usd": sum(r["cost"] for r in ok),
        "same_tokens_at_premium_usd": counterfactual,
        "interactive_within_budget": within / len(interactive) if interactive else 1.0,
        "by_kind": by_kind,
        "backend_outcomes": {n: dict(m.calls) for n, m in models.items()},
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    reqs = workload(args.sessions, args.seed, args.rate)
    with tempfile.TemporaryDirectory() as tmp:
        routed = await run_config(reqs, always_premium=False, seed=args.seed, state=Path(tmp))
        premium = await run_config(reqs, always_premium=True, seed=args.seed, state=Path(tmp))
    return {"routed": routed, "always_premium": premium, "requests": len(reqs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=6.0, help="Requests per simulated second.")
    args = parser.parse_args()
    started = time.monotonic()
    loop = VirtualTimeLoop()
    try:
        res = loop.run_until_complete(run(args))
    finally:
        loop.close()
    routed, premium = res["routed"], res["always_premium"]
    cost_ratio = routed["cost_usd"] / premium["cost_usd"]
    print(f"{res['requests']} requests, seed {args.seed}, virtual time\n")
    print(f"{'':16} {'cost USD':>10} {'interactive in budget':>22} {'refused':>30}")
    for name, r in (("raygent routed", routed), ("always premium", premium)):
        print(f"{name:16} {r['cost_usd']:10.4f} {r['interactive_within_budget']:22.2%} {r['refused']!s:>30}")
    print(
        f"\n{'latency (sim ms)':26} {'p50':>8} {'p95':>8} {'p99':>8} {'budget':>8} "
        f"{'in budget':>10}  backends"
    )
    for name, r in (("routed", routed), ("premium", premium)):
        for kind, k in r["by_kind"].items():
            print(
                f"{name + '/' + kind:26} {k['p50_ms']:8.0f} {k['p95_ms']:8.0f} {k['p99_ms']:8.0f} "
                f"{k['budget_ms'] or 0:8.0f} {k['within_budget']:10.2%}  {k['backends']}"
            )
    print(f"\ncost ratio routed / always-premium: {cost_ratio:.3f} (target ≤ 0.5)")
    print(
        "routed spend vs its own tokens at premium prices: "
        f"{routed['cost_usd'] / routed['same_tokens_at_premium_usd']:.3f}"
    )
    targets = {
        "cost_le_half_premium": cost_ratio <= 0.5,
        "interactive_99pct_within_budget": routed["interactive_within_budget"] >= 0.99,
    }
    print(f"targets met: {targets}")
    path = write(
        "router_p5",
        {
            "args": vars(args),
            **res,
            "cost_ratio": cost_ratio,
            "targets_met": targets,
            "wall_s": time.monotonic() - started,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
