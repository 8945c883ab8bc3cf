"""Routes, breakers, cooldowns, the retry budget and backoff inside the router (no network)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from raygent.core.config import OfflineModelSpec
from raygent.core.interceptors import CallContext, ModelCallInput
from raygent.core.messages import Message, Usage
from raygent.core.routing import BreakerSpec, RetrySpec, RouterSpec, TierRouteSpec
from raygent.router.errors import ModelResponseError, ModelUnavailableError, NoBackendError
from raygent.router.model import ModelRequest, ModelResponse, StreamEvent
from raygent.router.router import Router


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


class Scripted:
    """A backend that fails or answers per a script, taking ``latency_s`` of fake time."""

    def __init__(self, name: str, clock: Clock, *, latency_s: float = 0.1, fail: int = 0, error=None) -> None:
        self._name = name
        self._clock = clock
        self.latency_s = latency_s
        self.fail = fail  # how many of the next calls fail
        self.error = error or ModelUnavailableError(f"{name} down", extra={"http_status": 502})
        self.calls = 0
        self.requests: list[ModelRequest] = []

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        self.requests.append(request)
        self._clock.t += self.latency_s
        if self.fail:
            self.fail -= 1
            raise self.error
        return ModelResponse("ok", (), Usage(100, 20), self._name, "stop", self.latency_s)

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def spec(tier: str, cin: float, cout: float, expected_ms: float) -> OfflineModelSpec:
    return OfflineModelSpec(
        kind="offline",
        tier=tier,  # type: ignore[arg-type]
        cost_per_1k_input_usd=cin,
        cost_per_1k_output_usd=cout,
        expected_latency_ms=expected_ms,
    )


SPECS = {
    "premium": spec("premium", 2.5, 10.0, 900),
    "fast": spec("premium", 1.0, 4.0, 250),
    "open": spec("cheap", 0.1, 0.2, 400),
}


def call(tier: str = "premium", budget_ms: float | None = None) -> ModelCallInput:
    ctx = CallContext(run_id="r", session_id="s", agent="a", identity="svc@acme", tier=tier)
    return ModelCallInput(
        ctx=ctx, messages=(Message("user", "where is order 7?"),), latency_budget_ms=budget_ms
    )


class Sleeps:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.t += seconds


def make(config: RouterSpec, clock: Clock, **models: Scripted) -> tuple[Router, Sleeps]:
    sleeps = Sleeps(clock)
    router = Router(
        models, {n: SPECS[n] for n in models}, clock=clock, config=config, rng=random.Random(3), sleep=sleeps
    )
    return router, sleeps


LATENCY = RouterSpec(routes={"premium": TierRouteSpec(strategy="latency_budget", fallbacks=["premium"])})


async def test_latency_budget_route_picks_cheapest_fitting_and_records_stats() -> None:
    clock = Clock()
    models = {n: Scripted(n, clock) for n in SPECS}
    router, _ = make(LATENCY, clock, **models)
    out = await router.call_model(call(budget_ms=500))
    assert out.backend == "open"
    assert out.route_reason.startswith("latency_budget=500ms: open cheapest that fits")
    out = await router.call_model(call(budget_ms=300))
    assert out.backend == "fast"
    snap = router.stats()["fast"]
    assert (snap.calls, snap.errors, snap.in_flight) == (1, 0, 0)
    assert snap.latency_p50_ms == pytest.approx(100.0)


async def test_fallback_chain_and_breaker_open_skips_the_backend() -> None:
    clock = Clock()
    config = LATENCY.model_copy(
        update={"breaker": BreakerSpec(min_calls=2, window_calls=4, error_rate_threshold=0.5, open_s=30)}
    )
    models = {n: Scripted(n, clock) for n in SPECS}
    models["open"].fail = 100
    router, _ = make(config, clock, **models)
    first = await router.call_model(call(budget_ms=500))
    assert first.backend == "fast"
    assert first.route_reason.startswith("fallback: open unavailable (ModelUnavailableError) -> fast")
    await router.call_model(call(budget_ms=500))
    assert router.breaker_state("open") == "open"
    calls_before = models["open"].calls
    third = await router.call_model(call(budget_ms=500))
    assert models["open"].calls == calls_before  # not even tried while open
    assert third.route_reason.startswith("skipped open (open) -> fast")
    clock.t += 31  # half-open: one probe, which succeeds and closes the breaker
    models["open"].fail = 0
    probe = await router.call_model(call(budget_ms=500))
    assert probe.backend == "open" and router.breaker_state("open") == "closed"


async def test_429_cooldown_honours_retry_after() -> None:
    clock = Clock()
    limited = ModelUnavailableError("slow down", retry_after_s=7, extra={"http_status": 429})
    models = {"open": Scripted("open", clock, fail=1, error=limited), "fast": Scripted("fast", clock)}
    router, _ = make(RouterSpec(routes={"premium": TierRouteSpec(strategy="cost")}), clock, **models)
    assert (await router.call_model(call())).backend == "fast"
    assert (await router.call_model(call())).route_reason.startswith("skipped open (cooling down)")
    clock.t += 7
    assert (await router.call_model(call())).backend == "open"
    assert router.breaker_state("open") == "closed"


async def test_every_backend_blocked_fails_fast_with_retry_after() -> None:
    clock = Clock()
    limited = ModelUnavailableError("busy", retry_after_s=4, extra={"http_status": 503})
    models = {"open": Scripted("open", clock, fail=9, error=limited)}
    router, _ = make(RouterSpec(), clock, **models)
    with pytest.raises(NoBackendError):
        await router.call_model(call())
    with pytest.raises(NoBackendError) as caught:
        await router.call_model(call())
    assert caught.value.retry_after_s is not None and 0 < caught.value.retry_after_s <= 4
    assert caught.value.extra["skipped"] == {"open": "cooling down"}
    assert models["open"].calls == 1


async def test_same_backend_retry_waits_a_jittered_backoff_and_max_attempts_bounds_it() -> None:
    clock = Clock()
    config = RouterSpec(
        retry=RetrySpec(max_attempts=3, base_backoff_ms=100, max_backoff_ms=1000),
        breaker=BreakerSpec(min_calls=100, window_calls=100),  # keep it closed: this is about retries
    )
    models = {"open": Scripted("open", clock, fail=2)}
    router, sleeps = make(config, clock, **models)
    out = await router.call_model(call())
    assert out.backend == "open" and models["open"].calls == 3
    assert len(sleeps.delays) == 2
    assert 0 <= sleeps.delays[0] <= 0.1 and 0 <= sleeps.delays[1] <= 0.2
    models["open"].fail = 5
    with pytest.raises(NoBackendError):
        await router.call_model(call())
    assert models["open"].calls == 6


async def test_an_empty_retry_budget_stops_retries() -> None:
    clock = Clock()
    config = RouterSpec(
        retry=RetrySpec(max_attempts=5, budget_ratio=0, min_retries_per_s=0),
        breaker=BreakerSpec(min_calls=1000, window_calls=1000),
    )
    models = {n: Scripted(n, clock, fail=1) for n in ("open", "fast")}
    router, _ = make(config, clock, **models)
    with pytest.raises(NoBackendError, match="retry budget is spent"):
        await router.call_model(call())
    assert models["open"].calls + models["fast"].calls == 1


async def test_non_retryable_errors_are_raised_and_do_not_trip_the_breaker() -> None:
    clock = Clock()
    bad = ModelResponseError("400 bad request")
    models = {"open": Scripted("open", clock, fail=10, error=bad)}
    router, _ = make(RouterSpec(breaker=BreakerSpec(min_calls=2, window_calls=2)), clock, **models)
    for _ in range(4):
        with pytest.raises(ModelResponseError):
            await router.call_model(call())
    assert router.breaker_state("open") == "closed"
    assert router.stats()["open"].errors == 4


async def test_output_cap_bounds_max_tokens() -> None:
    clock = Clock()
    models = {"open": Scripted("open", clock)}
    router = Router(models, {"open": SPECS["open"]}, clock=clock, output_cap_tokens=64)
    await router.call_model(call())
    assert models["open"].requests[-1].max_output_tokens == 64


def test_route_with_unknown_model_is_a_config_error() -> None:
    from raygent.core.errors import ConfigError

    bad = RouterSpec(routes={"cheap": TierRouteSpec(strategy="fixed", model="nope")})
    with pytest.raises(ConfigError, match="unknown models"):
        Router({"open": Scripted("open", Clock())}, {"open": SPECS["open"]}, clock=Clock(), config=bad)
