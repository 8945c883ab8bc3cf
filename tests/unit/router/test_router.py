"""The router over the support-desk fleet: tier choice, cost, fallback, deadlines and streaming."""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from raygent.core.config import Fleet, OfflineModelSpec, OfflineRule, OpenAIModelSpec
from raygent.core.errors import ConfigError, DeadlineExceededError, ModelError
from raygent.core.fleetfile import load_fleet
from raygent.core.interceptors import CallContext, ModelCallInput, ModelCallOutput
from raygent.core.messages import Message, ToolSchema
from raygent.router.errors import ModelResponseError, ModelTimeoutError, ModelUnavailableError, NoBackendError
from raygent.router.model import Model, ModelRequest, ModelResponse, StreamDelta, StreamEvent
from raygent.router.offline import OfflineModel
from raygent.router.openai_compat import OpenAICompatModel
from raygent.router.router import Router

FLEET_FILE = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "fleet.yaml"


class FakeClock:
    """Wall and monotonic time that only move when the offline models 'sleep'."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 100.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class Down:
    """A backend that refuses every call, the way an overloaded server does."""

    def __init__(
        self, name: str, *, retry_after_s: float | None = None, after_text: str | None = None
    ) -> None:
        self._name = name
        self.calls = 0
        self.closed = False
        self._retry_after_s = retry_after_s
        self._after_text = after_text

    @property
    def name(self) -> str:
        return self._name

    def _error(self) -> ModelUnavailableError:
        return ModelUnavailableError(f"{self._name} is overloaded", retry_after_s=self._retry_after_s)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        raise self._error()

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        if self._after_text is not None:
            yield StreamDelta(self._after_text)
        raise self._error()

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(FLEET_FILE)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def offline(fleet: Fleet, clock: FakeClock, **overrides: Model) -> dict[str, Model]:
    models: dict[str, Model] = {}
    for name, spec in fleet.models.items():
        assert isinstance(spec, OfflineModelSpec)
        models[name] = overrides.get(name) or OfflineModel(name, spec, sleep=clock.sleep)
    return models


def call(
    tier: str,
    text: str = "where is order 1042?",
    *,
    deadline_ts: float | None = None,
    tools: tuple[str, ...] = (),
) -> ModelCallInput:
    ctx = CallContext(run_id="run-1", session_id="s-1", agent="support", identity="svc", tier=tier)
    if deadline_ts is not None:
        ctx = ctx.child(deadline_ts=deadline_ts)
    return ModelCallInput(
        ctx=ctx, messages=(Message("user", text),), tools=tuple(ToolSchema(t, "") for t in tools)
    )


def expected_cost(fleet: Fleet, out: ModelCallOutput) -> float:
    spec = fleet.models[out.backend]
    return (
        out.usage.input_tokens / 1000 * spec.cost_per_1k_input_usd
        + out.usage.output_tokens / 1000 * spec.cost_per_1k_output_usd
    )


async def test_tier_picks_its_backend_and_prices_the_call(fleet: Fleet, clock: FakeClock) -> None:
    router = Router(offline(fleet, clock), fleet.models, clock=clock)
    out = await router.call_model(call("premium", tools=("ask_orders",)))
    assert (out.backend, out.model) == ("premium", "premium")
    assert out.route_reason == "tier=premium: premium"
    assert out.tool_calls[0].name == "ask_orders"
    assert out.finish_reason == "tool_calls"
    assert out.usage.input_tokens > 0 and out.usage.output_tokens > 0
    assert out.cost_usd == pytest.approx(expected_cost(fleet, out))
    assert out.cost_usd > 0

    cheap = await router.call_model(call("cheap", tools=("ask_orders",)))
    assert cheap.backend == "open-small"
    assert cheap.route_reason == "tier=cheap: open-small"
    assert cheap.usage == out.usage  # same script, same tokens …
    assert cheap.cost_usd < out.cost_usd  # … at a lower price


async def test_a_tier_without_models_goes_to_the_cheapest(fleet: Fleet, clock: FakeClock) -> None:
    router = Router(offline(fleet, clock), fleet.models, clock=clock)
    out = await router.call_model(call("standard"))
    assert out.backend == "open-small"
    assert "no model in this tier" in out.route_reason


def test_plan_orders_fallbacks_by_expected_cost(clock: FakeClock) -> None:
    def spec(tier: str, cost_in: float, cost_out: float) -> OfflineModelSpec:
        return OfflineModelSpec(
            kind="offline", tier=tier, cost_per_1k_input_usd=cost_in, cost_per_1k_output_usd=cost_out
        )

    specs = {
        "pricey": spec("premium", 0.02, 0.06),
        "mid": spec("standard", 0.001, 0.002),
        "premium-b": spec("premium", 0.01, 0.03),
        "free": spec("cheap", 0.0, 0.0),
    }
    models: dict[str, Model] = {n: OfflineModel(n, s) for n, s in specs.items()}
    router = Router(models, specs, clock=clock)
    # The tier keeps fleet order (pricey first though dearer: the fleet author's preference), and the
    # fallbacks go cheapest first.
    assert router.plan(call("premium")) == ["pricey", "premium-b", "free", "mid"]
    assert router.plan(call("standard")) == ["mid", "free", "premium-b", "pricey"]


async def test_retryable_failure_falls_back(fleet: Fleet, clock: FakeClock) -> None:
    down = Down("premium")
    router = Router(offline(fleet, clock, premium=down), fleet.models, clock=clock)
    out = await router.call_model(call("premium", tools=("ask_orders",)))
    assert down.calls == 1
    assert out.backend == "open-small"
    assert out.route_reason == (
        "fallback: premium unavailable (ModelUnavailableError) -> open-small; "
        "first choice: tier=premium: premium"
    )
    assert out.tool_calls[0].name == "ask_orders"
    assert out.extra["failed_backends"] == ["premium"]
    assert out.cost_usd == pytest.approx(expected_cost(fleet, out))


async def test_a_slow_backend_times_out_and_falls_back(fleet: Fleet, clock: FakeClock) -> None:
    slow_spec = fleet.models["premium"].model_copy(update={"latency_ms": 5000, "timeout_s": 2.0})
    assert isinstance(slow_spec, OfflineModelSpec)
    slow = OfflineModel("premium", slow_spec, sleep=clock.sleep)
    specs = {**fleet.models, "premium": slow_spec}
    router = Router(offline(fleet, clock, premium=slow), specs, clock=clock)
    started = clock.monotonic()
    out = await router.call_model(call("premium"))
    assert out.backend == "open-small"
    assert "premium timed out (ModelTimeoutError)" in out.route_reason
    assert out.latency_s == pytest.approx(2.0)  # the timeout, measured by the injected clock
    assert clock.monotonic() - started == pytest.approx(2.0)


async def test_non_retryable_failure_is_raised_without_fallback(fleet: Fleet, clock: FakeClock) -> None:
    broken = OfflineModelSpec(kind="offline", tier="premium", rules=[OfflineRule(say="{missing}")])
    other = Down("open-small")
    models: dict[str, Model] = {"premium": OfflineModel("premium", broken), "open-small": other}
    router = Router(models, fleet.models, clock=clock)
    with pytest.raises(ModelResponseError, match="missing"):
        await router.call_model(call("premium"))
    assert other.calls == 0


async def test_every_backend_down_is_a_retryable_no_backend_error(fleet: Fleet, clock: FakeClock) -> None:
    models: dict[str, Model] = {
        "premium": Down("premium", retry_after_s=5),
        "open-small": Down("open-small", retry_after_s=2),
    }
    router = Router(models, fleet.models, clock=clock)
    with pytest.raises(NoBackendError) as caught:
        await router.call_model(call("premium"))
    error = caught.value
    assert error.retryable is True
    assert error.retry_after_s == 2
    assert error.extra["attempts"] == [
        "premium unavailable (ModelUnavailableError)",
        "open-small unavailable (ModelUnavailableError)",
    ]
    assert isinstance(error, ModelError)


async def test_a_passed_deadline_calls_nothing(fleet: Fleet, clock: FakeClock) -> None:
    down = Down("premium")
    router = Router(offline(fleet, clock, premium=down), fleet.models, clock=clock)
    with pytest.raises(DeadlineExceededError, match="run-1"):
        await router.call_model(call("premium", deadline_ts=clock.now() - 1))
    assert down.calls == 0


async def test_the_deadline_bounds_the_timeout_and_stops_fallback(fleet: Fleet, clock: FakeClock) -> None:
    slow_spec = fleet.models["premium"].model_copy(update={"latency_ms": 1000})
    assert isinstance(slow_spec, OfflineModelSpec)
    slow = OfflineModel("premium", slow_spec, sleep=clock.sleep)
    router = Router(offline(fleet, clock, premium=slow), fleet.models, clock=clock)
    # 0.5 s left: premium (1 s latency, 30 s timeout) times out at the deadline, leaving nothing for
    # the fallback.
    with pytest.raises(DeadlineExceededError, match="premium timed out"):
        await router.call_model(call("premium", deadline_ts=clock.now() + 0.5))
    # With 3 s left the same backend answers.
    out = await router.call_model(call("premium", deadline_ts=clock.now() + 3))
    assert out.backend == "premium"


async def test_stream_equals_call(fleet: Fleet, clock: FakeClock) -> None:
    router = Router(offline(fleet, clock), fleet.models, clock=clock)
    inp = call("premium", "hello!")
    events = [e async for e in router.stream_model(inp)]
    *deltas, final = events
    assert all(isinstance(d, StreamDelta) for d in deltas) and len(deltas) > 1
    assert isinstance(final, ModelCallOutput)
    assert "".join(d.text for d in deltas if isinstance(d, StreamDelta)) == final.text
    complete = await router.call_model(inp)
    assert (final.text, final.usage, final.cost_usd, final.route_reason) == (
        complete.text,
        complete.usage,
        complete.cost_usd,
        complete.route_reason,
    )


async def test_stream_falls_back_before_the_first_delta(fleet: Fleet, clock: FakeClock) -> None:
    router = Router(offline(fleet, clock, premium=Down("premium")), fleet.models, clock=clock)
    events = [e async for e in router.stream_model(call("premium", "hello"))]
    final = events[-1]
    assert isinstance(final, ModelCallOutput)
    assert final.backend == "open-small"
    assert final.route_reason.startswith("fallback: premium unavailable")


async def test_stream_cannot_switch_backends_after_text(fleet: Fleet, clock: FakeClock) -> None:
    flaky = Down("premium", after_text="Partial ")
    router = Router(offline(fleet, clock, premium=flaky), fleet.models, clock=clock)
    seen: list[object] = []
    with pytest.raises(ModelUnavailableError):
        async for event in router.stream_model(call("premium", "hello")):
            seen.append(event)
    assert seen == [StreamDelta("Partial ")]


async def test_stream_respects_a_passed_deadline(fleet: Fleet, clock: FakeClock) -> None:
    router = Router(offline(fleet, clock), fleet.models, clock=clock)
    with pytest.raises(DeadlineExceededError):
        async for _ in router.stream_model(call("premium", deadline_ts=clock.now())):
            pass


async def test_from_fleet_builds_a_backend_per_model(fleet: Fleet, clock: FakeClock) -> None:
    hosted = OpenAIModelSpec(kind="openai", tier="premium", base_url="http://127.0.0.1:9/v1", model="gpt-x")
    mixed = fleet.model_copy(update={"models": {**fleet.models, "hosted": hosted}})
    router = Router.from_fleet(mixed, clock=clock)
    assert list(router.models) == ["premium", "open-small", "hosted"]
    assert isinstance(router.models["premium"], OfflineModel)
    assert isinstance(router.models["hosted"], OpenAICompatModel)
    assert all(m.name == n for n, m in router.models.items())
    await router.aclose()


async def test_aclose_closes_every_backend(fleet: Fleet, clock: FakeClock) -> None:
    a, b = Down("premium"), Down("open-small")
    await Router({"premium": a, "open-small": b}, fleet.models, clock=clock).aclose()
    assert a.closed and b.closed


def test_models_and_specs_must_match(fleet: Fleet, clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match="open-small"):
        Router({"premium": Down("premium")}, fleet.models, clock=clock)


@pytest.mark.parametrize(
    "error",
    [
        ModelUnavailableError("busy", retry_after_s=3, extra={"backend": "x"}),
        ModelTimeoutError("slow"),
        ModelResponseError("bad"),
        NoBackendError("none", retryable=True),
    ],
)
def test_router_errors_pickle_with_their_fields(error: ModelError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.detail, copy.retryable, copy.retry_after_s, copy.extra) == (
        error.detail,
        error.retryable,
        error.retry_after_s,
        error.extra,
    )


def test_retryable_defaults() -> None:
    assert ModelUnavailableError("x").retryable and ModelTimeoutError("x").retryable
    assert not ModelResponseError("x").retryable and not NoBackendError("x").retryable
    assert ModelUnavailableError("x").to_problem()["status"] == 503
