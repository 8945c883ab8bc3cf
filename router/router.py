"""The router: the terminal :class:`~raygent.core.interceptors.ModelStage` that picks a backend per call.

It tries the models of the caller's tier in fleet order, then every other model from the cheapest
expected cost up, moving on only when a backend fails with a *retryable* error. The caller's wall-clock
deadline bounds each attempt's timeout. Smarter strategies (latency, live stats, budgets) come later and
only need to change :meth:`Router.plan`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from raygent.core.clock import Clock
from raygent.core.config import Fleet, OfflineModelSpec, OpenAIModelSpec
from raygent.core.errors import ConfigError, DeadlineExceededError, ModelError
from raygent.core.interceptors import ModelCallInput, ModelCallOutput, ModelStage
from raygent.router.errors import ModelResponseError, ModelTimeoutError, NoBackendError
from raygent.router.model import Model, ModelRequest, ModelResponse, StreamDelta, StreamDone, StreamEvent
from raygent.router.offline import OfflineModel
from raygent.router.openai_compat import OpenAICompatModel
from raygent.router.tokens import count_request_tokens

__all__ = ["RouteSpec", "Router", "build_model", "models_from_fleet"]

# Output length assumed when ranking fallbacks by cost; only the order matters, not the amount.
_EXPECTED_OUTPUT_TOKENS = 256


class RouteSpec(Protocol):
    """What the router needs to know about a backend (both fleet model specs satisfy it)."""

    @property
    def tier(self) -> str: ...

    @property
    def cost_per_1k_input_usd(self) -> float: ...

    @property
    def cost_per_1k_output_usd(self) -> float: ...

    @property
    def timeout_s(self) -> float: ...


def build_model(name: str, spec: OfflineModelSpec | OpenAIModelSpec) -> Model:
    """The backend for one fleet model entry."""
    if isinstance(spec, OfflineModelSpec):
        return OfflineModel(name, spec)
    return OpenAICompatModel(name, spec)


def models_from_fleet(fleet: Fleet) -> dict[str, Model]:
    """A backend for every model of the fleet, in fleet order."""
    return {name: build_model(name, spec) for name, spec in fleet.models.items()}


@dataclass(frozen=True, slots=True)
class _Failure:
    backend: str
    error: ModelError

    def describe(self) -> str:
        verb = "timed out" if isinstance(self.error, ModelTimeoutError) else "unavailable"
        return f"{self.backend} {verb} ({type(self.error).__name__})"


class Router(ModelStage):
    """Routes model calls to backends by tier, with fallback on retryable failures.

    Args:
        models: Backends by fleet key; their order is the preference order within a tier.
        specs: Tier, prices and timeout of each backend, by the same keys.
        clock: Wall clock for deadlines and monotonic clock for latency.

    Raises:
        ConfigError: ``models`` and ``specs`` do not name the same backends.
    """

    def __init__(self, models: Mapping[str, Model], specs: Mapping[str, RouteSpec], *, clock: Clock) -> None:
        if set(models) != set(specs):
            missing = sorted(set(models) ^ set(specs))
            raise ConfigError(f"router models and specs must name the same backends; mismatched: {missing}")
        self._models = dict(models)
        self._specs = dict(specs)
        self._clock = clock

    @classmethod
    def from_fleet(cls, fleet: Fleet, *, clock: Clock) -> Router:
        """A router over a backend for every model in ``fleet``."""
        return cls(models_from_fleet(fleet), dict(fleet.models), clock=clock)

    @property
    def models(self) -> Mapping[str, Model]:
        return dict(self._models)

    def plan(self, inp: ModelCallInput) -> list[str]:
        """Backends to try, in order: the caller's tier in fleet order, then others by expected cost."""
        in_tier = [name for name, spec in self._specs.items() if spec.tier == inp.ctx.tier]
        input_tokens = count_request_tokens(inp.messages, inp.tools)

        def expected_cost(name: str) -> float:
            spec = self._specs[name]
            return (
                input_tokens * spec.cost_per_1k_input_usd
                + _EXPECTED_OUTPUT_TOKENS * spec.cost_per_1k_output_usd
            ) / 1000

        others = sorted((name for name in self._specs if name not in in_tier), key=expected_cost)
        return in_tier + others

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        """Run the call on the first backend that succeeds.

        Raises:
            DeadlineExceededError: The caller's deadline passed before a backend answered.
            ModelError: A backend failed with a non-retryable error (raised as is).
            NoBackendError: Every candidate failed with a retryable error, or there is none.
        """
        started = self._clock.monotonic()
        failures: list[_Failure] = []
        for name in self.plan(inp):
            request = self._request(inp, name, failures)
            try:
                async with asyncio.timeout(request.timeout_s):
                    response = await self._models[name].complete(request)
            except TimeoutError:
                failures.append(_Failure(name, self._router_timeout(name, request)))
                continue
            except ModelError as exc:
                if not exc.retryable:
                    raise
                failures.append(_Failure(name, exc))
                continue
            return self._output(inp, name, response, failures, self._clock.monotonic() - started)
        raise self._exhausted(inp, failures)

    async def stream_model(self, inp: ModelCallInput) -> AsyncIterator[StreamDelta | ModelCallOutput]:
        """Like :meth:`call_model`, yielding text deltas and then the final output.

        A backend that fails before its first delta is replaced by the next candidate; once text has
        been yielded the call can no longer switch backends, so a later failure is raised.
        """
        started = self._clock.monotonic()
        failures: list[_Failure] = []
        for name in self.plan(inp):
            request = self._request(inp, name, failures)
            response: ModelResponse | None = None
            emitted = False
            try:
                async for event in self._bounded_stream(name, request):
                    if isinstance(event, StreamDone):
                        response = event.response
                    else:
                        emitted = True
                        yield event
            except ModelError as exc:
                if emitted or not exc.retryable:
                    raise
                failures.append(_Failure(name, exc))
                continue
            if response is None:
                raise ModelResponseError(f"model backend {name!r} ended its stream without a final response")
            yield self._output(inp, name, response, failures, self._clock.monotonic() - started)
            return
        raise self._exhausted(inp, failures)

    async def aclose(self) -> None:
        """Close every backend (connection pools)."""
        for model in self._models.values():
            await model.aclose()

    # ------------------------------------------------------------------------------------------ helpers

    def _request(self, inp: ModelCallInput, name: str, failures: list[_Failure]) -> ModelRequest:
        """The request for ``name``, its timeout bounded by what is left of the caller's deadline."""
        timeout_s = self._specs[name].timeout_s
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
        return ModelRequest(messages=inp.messages, tools=inp.tools, timeout_s=timeout_s)

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
        failures: list[_Failure],
        latency_s: float,
    ) -> ModelCallOutput:
        spec = self._specs[name]
        usage = response.usage
        cost_usd = (
            usage.input_tokens * spec.cost_per_1k_input_usd
            + usage.output_tokens * spec.cost_per_1k_output_usd
        ) / 1000
        extra = dict(response.extra)
        if failures:
            reason = f"fallback: {', '.join(f.describe() for f in failures)} -> {name}"
            extra["failed_backends"] = [f.backend for f in failures]
        elif spec.tier == inp.ctx.tier:
            reason = f"tier={inp.ctx.tier}: {name}"
        else:
            reason = f"tier={inp.ctx.tier}: no model in this tier -> {name} (cheapest)"
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
    def _exhausted(inp: ModelCallInput, failures: list[_Failure]) -> NoBackendError:
        if not failures:
            return NoBackendError(f"no model backend is configured (tier {inp.ctx.tier!r} requested)")
        hints = [f.error.retry_after_s for f in failures if f.error.retry_after_s is not None]
        return NoBackendError(
            f"every model backend failed for tier {inp.ctx.tier!r}: "
            + ", ".join(f.describe() for f in failures),
            retryable=True,
            retry_after_s=min(hints) if hints else None,
            extra={"attempts": [f.describe() for f in failures]},
        )
