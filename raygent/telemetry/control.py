"""Metrics and the detector's controls in the call chains: one interceptor per chain.

:class:`MetricsModelInterceptor` sits in the router's model chain inside audit: it refuses a throttled
agent's calls (429, audited by the stage above), moves a rerouted agent to the tier the detector chose,
and records one :class:`~raygent.telemetry.metrics.MetricEvent` per call. :class:`MetricsToolInterceptor`
records one per tool call in the gateway. Both read controls from this process's
:class:`~raygent.telemetry.client.TelemetryClient`; quarantine (a tool-call hold) is enforced by
:class:`raygent.governance.quarantine.QuarantineInterceptor`.
"""

from __future__ import annotations

from dataclasses import replace

from raygent.core.errors import RaygentError
from raygent.core.interceptors import (
    ModelCallInput,
    ModelCallOutput,
    ModelInterceptor,
    ToolCallInput,
    ToolCallOutput,
    ToolInterceptor,
)
from raygent.telemetry.client import TelemetryClient
from raygent.telemetry.errors import AgentThrottledError
from raygent.telemetry.metrics import MetricEvent

__all__ = ["MetricsModelInterceptor", "MetricsToolInterceptor"]


class MetricsModelInterceptor(ModelInterceptor):
    """Throttle, reroute, measure.

    Args:
        client: This process's telemetry client (events out, controls in).
    """

    def __init__(self, client: TelemetryClient) -> None:
        self._client = client

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        ctx, clock = inp.ctx, self._client.clock
        controls = self._client.controls
        now = clock.now()
        left = controls.throttle_left_s(ctx.agent, now)
        if left > 0:
            self._record(inp, "", 0.0, error_type="agent-throttled", status=429)
            raise AgentThrottledError(
                f"agent {ctx.agent!r} is throttled by the anomaly detector for another {left:.0f} s",
                retry_after_s=round(left, 3),
                extra={"agent": ctx.agent},
            )
        tier = controls.reroute_tier(ctx.agent, now)
        rerouted_from = None
        if tier is not None and tier != ctx.tier:
            rerouted_from = ctx.tier
            inp = replace(inp, ctx=ctx.child(tier=tier))
        t0 = clock.monotonic()
        try:
            out = await self.next.call_model(inp)
        except RaygentError as exc:
            status = exc.status if exc.status in (429, 503) else 0
            self._record(inp, "", clock.monotonic() - t0, error_type=exc.slug, status=status)
            raise
        except Exception as exc:
            self._record(inp, "", clock.monotonic() - t0, error_type=type(exc).__name__)
            raise
        if rerouted_from is not None:
            reason = f"detector reroute {rerouted_from}->{tier}; {out.route_reason}"
            out = replace(out, route_reason=reason)
        self._client.record(
            MetricEvent(
                kind="model",
                agent=ctx.agent,
                name=out.backend,
                latency_s=clock.monotonic() - t0,
                ts=now,
                session_id=ctx.session_id,
                run_id=ctx.run_id,
                input_tokens=out.usage.input_tokens,
                output_tokens=out.usage.output_tokens,
                cost_usd=out.cost_usd,
            )
        )
        return out

    def _record(
        self, inp: ModelCallInput, name: str, latency_s: float, *, error_type: str, status: int = 0
    ) -> None:
        ctx = inp.ctx
        self._client.record(
            MetricEvent(
                kind="model",
                agent=ctx.agent,
                name=name or f"tier:{ctx.tier}",
                latency_s=latency_s,
                ts=self._client.clock.now(),
                session_id=ctx.session_id,
                run_id=ctx.run_id,
                error=True,
                error_type=error_type,
                status=status,
            )
        )


class MetricsToolInterceptor(ToolInterceptor):
    """One event per tool call: latency and whether it failed (raised, or returned an error result)."""

    def __init__(self, client: TelemetryClient) -> None:
        self._client = client

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        ctx, clock = inp.ctx, self._client.clock
        now, t0 = clock.now(), clock.monotonic()
        error, error_type = True, ""
        try:
            out = await self.next.call_tool(inp)
            error = out.is_error
            if error and isinstance(out.result, dict):
                error_type = str(out.result.get("error_type", ""))
            return out
        except BaseException as exc:
            error_type = exc.slug if isinstance(exc, RaygentError) else type(exc).__name__
            # A call held for approval (202) or parked is waiting, not failing.
            error = not (isinstance(exc, RaygentError) and exc.status < 400)
            raise
        finally:
            self._client.record(
                MetricEvent(
                    kind="tool",
                    agent=ctx.agent,
                    name=inp.call.name,
                    latency_s=clock.monotonic() - t0,
                    ts=now,
                    session_id=ctx.session_id,
                    run_id=ctx.run_id,
                    error=error,
                    error_type=error_type,
                )
            )
