"""The router: the terminal :class:`~raygent.core.interceptors.ModelStage` that picks a backend per call.

For every call it asks the route of the caller's tier for a ranking (a :mod:`~raygent.router.strategies`
strategy over live :mod:`~raygent.router.stats`), appends the route's fallback chain, and walks it:
backends whose :mod:`~raygent.router.breaker` is open or cooling down after a 429/503 are skipped, a
retryable failure moves on to the next backend, and every attempt after the first is paid from the
:mod:`~raygent.router.retry` budget (re-trying a backend already tried waits a jittered backoff first).
The caller's deadline bounds every attempt's timeout. The decision's reason travels in
``route_reason`` to the span and the audit record.

Without a ``router.routes`` entry a tier uses the ``tier`` strategy: the tier's models in fleet order,
then the others cheapest first (the spine's behaviour).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from raygent.core.clock import Clock
from raygent.core.config import Fleet, OfflineModelSpec, OpenAIModelSpec, VLLMModelSpec
from raygent.core.errors import ConfigError, DeadlineExceededError, ModelError
from raygent.core.interceptors import ModelCallInput, ModelCallOutput, ModelStage
from raygent.core.messages import Message
from raygent.core.routing import RouterSpec
from raygent.router.breaker import CircuitBreaker
from raygent.router.errors import ModelResponseError, ModelTimeoutError, NoBackendError
from raygent.router.model import Model, ModelRequest, ModelResponse, StreamDelta, StreamDone, StreamEvent
from raygent.router.offline import OfflineModel
from raygent.router.openai_compat import OpenAICompatModel
from raygent.router.retry import RetryBudget, backoff_s
from raygent.router.stats import BackendStats, StatsSnapshot
from raygent.router.strategies import Candidate, Decision, RouteRequest, Strategy, TierStrategy, make_strategy

__all__ = ["RouteSpec", "Router", "build_model", "models_from_fleet"]

# Output length assumed when ranking by cost; only the order matters, not the amount.
_EXPECTED_OUTPUT_TOKENS = 256

Sleep = Callable[[float], Awaitable[None]]


class RouteSpec(Protocol):
    """What the router needs to know about a backend (every fleet model spec satisfies it)."""

    @property
    def tier(self) -> str: ...

    @property
    def cost_per_1k_input_usd(self) -> float: ...

    @property
    def cost_per_1k_output_usd(self) -> float: ...

    @property
    def timeout_s(self) -> float: ...


def build_model(
    name: str, spec: OfflineModelSpec | OpenAIModelSpec | VLLMModelSpec, *, base_dir: str = "."
) -> Model:
    """The backend for one fleet model entry (a vLLM model runs its engine in this process)."""
    if isinstance(spec, OfflineModelSpec):
        return OfflineModel(name, spec)
    if isinstance(spec, VLLMModelSpec):
        # Imported here: vLLM is an optional, heavy dependency of one backend kind.
        from raygent.router.vllm_engine import VLLMEngineModel

        return VLLMEngineModel(name, spec, base_dir=base_dir)
    return OpenAICompatModel(name, spec)


def models_from_fleet(fleet: Fleet, overrides: Mapping[str, Model] | None = None) -> dict[str, Model]:
    """A backend for every model of the fleet, in fleet order; ``overrides`` replace some by key."""
    overrides = overrides or {}
    return {
        name: overrides.get(name) or build_model(name, spec, base_dir=fleet.base_dir)
        for name, spec in fleet.models.items()
    }


def approx_input_tokens(messages: tuple[Message, ...]) -> int:
    """A cheap prompt-size estimate for ranking (four characters a token, four tokens a message)."""
    return sum(len(m.content) for m in messages) // 4 + 4 * len(messages)


@dataclass(frozen=True, slots=True)
class _Failure:
    backend: str
    error: ModelError

    def describe(self) -> str:
        verb = "timed out" if isinstance(self.error, ModelTimeoutError) else "unavailable"
        return f"{self.backend} {verb} ({type(self.error).__name__})"


@dataclass(slots=True)
class _CallState:
    failures: list[_Failure] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why (breaker open, cooling down)
    blocked_until: list[float] = field(default_factory=list)
    budget_exhausted: bool = False


@dataclass(frozen=True, slots=True)
class _Route:
    strategy: Strategy
    candidates: tuple[Candidate, ...]
    fallbacks: tuple[str, ...]


class Router(ModelStage):
    """Routes model calls to backends by strategy, with breakers, fallbacks and one retry layer.

    Args:
        models: Backends by fleet key; their order is the preference order within a tier.
        specs: Tier, prices, latency prior and timeout of each backend, by the same keys.
        clock: Wall clock for deadlines and monotonic clock for latency, breakers and budgets.
        config: Routes, breaker, retry and stats settings (the fleet's ``router:`` section).
        rng: Randomness for backoff jitter (seed it for reproducible runs).
        sleep: How to wait out a backoff (tests pass a fake).
        output_cap_tokens: Upper bound on each call's completion tokens (set by budgets, so a
            reservation always covers what the call can spend).

    Raises:
        ConfigError: ``models`` and ``specs`` do not name the same backends, or a route names an
            unknown model.
    """

    def __init__(
        self,
        models: Mapping[str, Model],
        specs: Mapping[str, RouteSpec],
        *,
        clock: Clock,
        config: RouterSpec | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        output_cap_tokens: int | None = None,
    ) -> None:
        if set(models) != set(specs):
            missing = sorted(set(models) ^ set(specs))
            raise ConfigError(f"router models and specs must name the same backends; mismatched: {missing}")
        self._models = dict(models)
        self._specs = dict(specs)
        self._clock = clock
        self._config = config or RouterSpec()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._output_cap = output_cap_tokens
        window = self._config.stats_window
        self._stats = {
            name: BackendStats(
                name,
                window=window,
                cost_per_1k_input_usd=spec.cost_per_1k_input_usd,
                cost_per_1k_output_usd=spec.cost_per_1k_output_usd,
            )
            for name, spec in self._specs.items()
        }
        self._breakers = {name: CircuitBreaker(self._config.breaker) for name in self._specs}
        self._retry_budget = RetryBudget(self._config.retry, clock.monotonic())
        self._candidates = {
            name: Candidate(
                name=name,
                tier=spec.tier,
                cost_per_1k_input_usd=spec.cost_per_1k_input_usd,
                cost_per_1k_output_usd=spec.cost_per_1k_output_usd,
                expected_latency_ms=float(getattr(spec, "expected_latency_ms", 100.0)),
                max_concurrency=int(getattr(spec, "max_concurrency", 16)),
                stats=self._stats[name],
            )
            for name, spec in self._specs.items()
        }
        self._routes = {tier: self._build_route(tier) for tier in ("premium", "standard", "cheap")}

    @classmethod
    def from_fleet(
        cls,
        fleet: Fleet,
        *,
        clock: Clock,
        models: Mapping[str, Model] | None = None,
        rng: random.Random | None = None,
    ) -> Router:
        """A router over a backend for every model in ``fleet`` (``models`` replace some by key)."""
        budgets = fleet.router.budgets
        return cls(
            models_from_fleet(fleet, models),
            dict(fleet.models),
            clock=clock,
            config=fleet.router,
            rng=rng,
            output_cap_tokens=budgets.expected_output_tokens if budgets.enabled else None,
        )

    @property
    def models(self) -> Mapping[str, Model]:
        return dict(self._models)

    def stats(self) -> dict[str, StatsSnapshot]:
        """A snapshot of every backend's live stats."""
        return {name: s.snapshot() for name, s in self._stats.items()}

    def breaker_state(self, name: str) -> str:
        return self._breakers[name].state

    # -------------------------------------------------------------------------------------- decision

    def _build_route(self, tier: str) -> _Route:
        spec = self._config.routes.get(tier)  # type: ignore[call-overload]
        if spec is None:
            return _Route(TierStrategy(), tuple(self._candidates.values()), ())
        names = [*spec.candidates, *spec.fallbacks, *([spec.model] if spec.model else [])]
        unknown = sorted({n for n in names if n not in self._candidates})
        if unknown:
            raise ConfigError(f"route {tier!r} names unknown models: {unknown}")
        pool = spec.candidates or list(self._candidates)
        strategy = make_strategy(spec.strategy, model=spec.model, latency_budget_ms=spec.latency_budget_ms)
        return _Route(strategy, tuple(self._candidates[n] for n in pool), tuple(spec.fallbacks))

    def decide(self, inp: ModelCallInput) -> Decision:
        """The backends to try for ``inp``, in order, and why the first one leads. Never calls one."""
        route = self._routes.get(inp.ctx.tier) or self._routes["standard"]
        request = RouteRequest(
            tier=inp.ctx.tier,
            input_tokens=approx_input_tokens(inp.messages),
            output_tokens=_EXPECTED_OUTPUT_TOKENS,
            latency_budget_ms=inp.latency_budget_ms,
            min_samples=self._config.min_samples,
        )
        decision = route.strategy.choose(request, route.candidates)
        if not route.fallbacks:
            return decision
        order = decision.order + tuple(f for f in route.fallbacks if f not in decision.order)
        return Decision(order, decision.reason)

    def plan(self, inp: ModelCallInput) -> list[str]:
        """Backends to try, in order (the decision without its reason)."""
        return list(self.decide(inp).order)

    # ------------------------------------------------------------------------------------------ calls

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        """Run the call on the first backend that succeeds.

        Raises:
            DeadlineExceededError: The caller's deadline passed before a backend answered.
            ModelError: A backend failed with a non-retryable error (raised as is).
            NoBackendError: Every attempt failed with a retryable error, every backend is open or
                cooling down, or the retry budget is spent.
        """
        started = self._clock.monotonic()
        decision = self.decide(inp)
        state = _CallState()
        async for name in self._attempts(decision, state):
            request = self._request_or_release(inp, name, state)
            stats = self._stats[name]
            stats.begin()
            t0 = self._clock.monotonic()
            try:
                async with asyncio.timeout(request.timeout_s):
                    response = await self._models[name].complete(request)
            except TimeoutError:
                self._failed(name, self._router_timeout(name, request), t0, state)
                continue
            except ModelError as exc:
                if not exc.retryable:
                    self._rejected(name, t0)
                    raise
                self._failed(name, exc, t0, state)
                continue
            except BaseException:
                self._rejected(name, t0)
                raise
            self._succeeded(name, response, t0, response.extra.get("ttft_s"))
            return self._output(inp, name, response, decision, state, self._clock.monotonic() - started)
        raise self._exhausted(inp, state)

    async def stream_model(self, inp: ModelCallInput) -> AsyncIterator[StreamDelta | ModelCallOutput]:
        """Like :meth:`call_model`, yielding text deltas and then the final output.

        A backend that fails before its first delta is replaced by the next candidate; once text has
        been yielded the call can no longer switch backends, so a later failure is raised.
        """
        started = self._clock.monotonic()
        decision = self.decide(inp)
        state = _CallState()
        async for name in self._attempts(decision, state):
            request = self._request_or_release(inp, name, state)
            stats = self._stats[name]
            stats.begin()
            t0 = self._clock.monotonic()
            ttft_s: float | None = None
            response: ModelResponse | None = None
            try:
                async for event in self._bounded_stream(name, request):
                    if isinstance(event, StreamDone):
                        response = event.response
                    else:
                        if ttft_s is None:
                            ttft_s = self._clock.monotonic() - t0
                        yield event
            except ModelError as exc:
                if ttft_s is not None or not exc.retryable:
                    self._rejected(name, t0)
                    raise
                self._failed(name, exc, t0, state)
                continue
            except BaseException:
                self._rejected(name, t0)
                raise
            if response is None:
                self._rejected(name, t0)
                raise ModelResponseError(f"model backend {name!r} ended its stream without a final response")
            self._succeeded(name, response, t0, ttft_s)
            yield self._output(inp, name, response, decision, state, self._clock.monotonic() - started)
            return
        raise self._exhausted(inp, state)

    async def aclose(self) -> None:
        """Close every backend (connection pools, engines)."""
        for model in self._models.values():
            await model.aclose()

    # ------------------------------------------------------------------------------- attempt machinery

    async def _attempts(self, decision: Decision, state: _CallState) -> AsyncIterator[str]:
        """Backends to call, one at a time, after breaker, retry-budget and backoff checks.

        Walks the decision's order; while attempts remain it walks it again, waiting a jittered
        backoff before re-trying a backend. Stops when a whole round found every backend blocked.
        """
        retry = self._config.retry
        clock = self._clock
        self._retry_budget.on_request(clock.monotonic())
        attempts = 0
        for round_no in range(retry.max_attempts):
            attempted = False
            for name in decision.order:
                if attempts >= retry.max_attempts:
                    return
                breaker = self._breakers[name]
                now = clock.monotonic()
                blocked = breaker.blocked_until(now)
                if blocked is not None:
                    state.skipped.setdefault(name, "cooling down" if breaker.cooldown_until > now else "open")
                    state.blocked_until.append(blocked - now)
                    continue
                if attempts > 0:
                    if not self._retry_budget.try_spend(now):
                        state.budget_exhausted = True
                        return
                    if round_no > 0:
                        await self._sleep(backoff_s(round_no, retry, self._rng))
                        now = clock.monotonic()
                if not breaker.acquire(now):
                    continue
                attempts += 1
                attempted = True
                yield name
            if not attempted:
                return

    def _request_or_release(self, inp: ModelCallInput, name: str, state: _CallState) -> ModelRequest:
        try:
            return self._request(inp, name, state.failures)
        except BaseException:
            self._breakers[name].release()
            raise

    def _succeeded(self, name: str, response: ModelResponse, t0: float, ttft_s: object) -> None:
        now = self._clock.monotonic()
        ttft = float(ttft_s) if isinstance(ttft_s, int | float) else None
        self._stats[name].end(now - t0, ok=True, output_tokens=response.usage.output_tokens, ttft_s=ttft)
        self._breakers[name].on_success(now)

    def _failed(self, name: str, error: ModelError, t0: float, state: _CallState) -> None:
        now = self._clock.monotonic()
        self._stats[name].end(now - t0, ok=False)
        breaker = self._breakers[name]
        if error.extra.get("http_status") in (429, 503) or error.retry_after_s is not None:
            breaker.on_cooldown(now, error.retry_after_s)
        else:
            breaker.on_failure(now)
        state.failures.append(_Failure(name, error))

    def _rejected(self, name: str, t0: float) -> None:
        """The call ended without an outcome the backend is to blame for (4xx, cancelled)."""
        self._stats[name].end(self._clock.monotonic() - t0, ok=False)
        self._breakers[name].release()

    # ------------------------------------------------------------------------------------------ helpers

    def _request(self, inp: ModelCallInput, name: str, failures: list[_Failure]) -> ModelRequest:
        """The request for ``name``, its timeout bounded by what is left of the caller's deadline."""
        spec = self._specs[name]
        timeout_s = spec.timeout_s
        if inp.ctx.deadline_ts is not None:
            remaining_s = inp.ctx.deadline_ts - self._clock.now()
            if remaining_s <= 0:
                tried = "; tried: " + ", ".join(f.describe() for f in failures) if failures else ""
                raise DeadlineExceededError(
                    f"the deadline of run {inp.ctx.run_id!r} passed before model backend {name!r} "
                    f"could be called{tried}",
                    extra={"run_id": inp.ctx.run_id, "backend": name},
                )
            timeout_s = min(timeout_s, remaining_s)
        max_tokens = None
        if self._output_cap is not None:
            own = getattr(spec, "max_output_tokens", None)
            max_tokens = min(self._output_cap, own) if isinstance(own, int) else self._output_cap
        return ModelRequest(
            messages=inp.messages, tools=inp.tools, timeout_s=timeout_s, max_output_tokens=max_tokens
        )

    async def _bounded_stream(self, name: str, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """The backend's stream, with the whole stream (not each event) bounded by the request timeout."""
        stream = self._models[name].stream(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (request.timeout_s or 0.0)
        try:
            while True:
                try:
                    # Bound each step rather than wrapping the loop: a timeout scope must not span a
                    # yield, or it would cancel the consumer's code instead of the backend.
                    async with asyncio.timeout_at(deadline):
                        event = await anext(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise self._router_timeout(name, request) from None
                yield event
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    @staticmethod
    def _router_timeout(name: str, request: ModelRequest) -> ModelTimeoutError:
        return ModelTimeoutError(
            f"model backend {name!r} did not answer within {request.timeout_s or 0:g} s",
            extra={"backend": name},
        )

    def _output(
        self,
        inp: ModelCallInput,
        name: str,
        response: ModelResponse,
        decision: Decision,
        state: _CallState,
        latency_s: float,
    ) -> ModelCallOutput:
        spec = self._specs[name]
        usage = response.usage
        cost_usd = (
            usage.input_tokens * spec.cost_per_1k_input_usd
            + usage.output_tokens * spec.cost_per_1k_output_usd
        ) / 1000
        extra = dict(response.extra)
        reason = decision.reason
        if state.skipped:
            skipped = ", ".join(f"{n} ({why})" for n, why in state.skipped.items())
            reason = f"skipped {skipped} -> {name}; first choice: {reason}"
        if state.failures:
            reason = f"fallback: {', '.join(f.describe() for f in state.failures)} -> {name}; first choice: "
            reason += decision.reason
            extra["failed_backends"] = [f.backend for f in state.failures]
        return ModelCallOutput(
            text=response.text,
            tool_calls=response.tool_calls,
            usage=usage,
            backend=name,
            model=response.model,
            finish_reason=response.finish_reason,
            cost_usd=cost_usd,
            latency_s=latency_s,
            route_reason=reason,
            extra=extra,
        )

    @staticmethod
    def _exhausted(inp: ModelCallInput, state: _CallState) -> NoBackendError:
        failures = state.failures
        if not failures and not state.skipped:
            return NoBackendError(f"no model backend is configured (tier {inp.ctx.tier!r} requested)")
        hints = [f.error.retry_after_s for f in failures if f.error.retry_after_s is not None]
        hints += [max(0.0, s) for s in state.blocked_until]
        parts = [f.describe() for f in failures]
        parts += [f"{n} skipped ({why})" for n, why in state.skipped.items()]
        detail = f"every model backend failed for tier {inp.ctx.tier!r}: " + ", ".join(parts)
        if state.budget_exhausted:
            detail += "; the retry budget is spent"
        return NoBackendError(
            detail,
            retryable=True,
            retry_after_s=min(hints) if hints else None,
            extra={"attempts": [f.describe() for f in failures], "skipped": dict(state.skipped)},
        )
