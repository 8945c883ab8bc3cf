"""Tracing interceptors: one OTel span per model call (router) and per tool call (gateway).

Each span is a child of the caller's ``CallContext.traceparent`` and hands its own ``traceparent`` down
the chain, so anything below it, a delegated agent included, is parented under it in the same trace.
Attributes follow the OTel GenAI semantic conventions plus ``raygent.*`` context. Only names, ids,
counts and costs are recorded, plus a tool call's arguments after redaction
(:class:`~raygent.telemetry.redaction.ArgumentRedactor`): never messages or results, which may carry
secrets, and never exception messages (only their type).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from raygent.core.errors import RaygentError
from raygent.core.interceptors import (
    CallContext,
    ModelCallInput,
    ModelCallOutput,
    ModelInterceptor,
    ToolCallInput,
    ToolCallOutput,
    ToolInterceptor,
)
from raygent.telemetry.propagation import context_from_traceparent, traceparent_of
from raygent.telemetry.redaction import ArgumentRedactor

__all__ = ["TracingModelInterceptor", "TracingToolInterceptor", "context_attributes"]

# error.type for a tool that ran but reported failure in its result rather than raising.
_TOOL_ERROR_TYPE = "tool_error"


def context_attributes(ctx: CallContext) -> dict[str, AttributeValue]:
    """The ``raygent.*`` attributes describing who made a call, for which run and step.

    Args:
        ctx: The call's context.

    Returns:
        Attributes safe to record on any span (identifiers only, no content).
    """
    return {
        "raygent.agent": ctx.agent,
        "raygent.run_id": ctx.run_id,
        "raygent.session_id": ctx.session_id,
        "raygent.step": ctx.step,
        "raygent.identity": ctx.identity,
        "raygent.tier": ctx.tier,
        "raygent.prompt.id": ctx.prompt_id,
        "raygent.prompt.version": ctx.prompt_version,
        "raygent.prompt.sha256": ctx.prompt_sha256,
        "raygent.caller_chain": ",".join(ctx.caller_chain),
    }


def _record_failure(span: Span, exc: BaseException) -> None:
    # The class name only, in the event as in the status: an exception's message (and its traceback's
    # locals) may echo arguments, and those may hold secrets. span.record_exception would add both.
    error_type = type(exc).__name__
    span.add_event("exception", {"exception.type": error_type})
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


@contextmanager
def _call_span(
    tracer: Tracer,
    name: str,
    *,
    kind: SpanKind,
    ctx: CallContext,
    attributes: Mapping[str, AttributeValue],
) -> Iterator[tuple[Span, CallContext]]:
    """Run the body inside a span parented on ``ctx.traceparent``; yield it with the child context.

    The child context carries the new span's ``traceparent`` for the stages below. Any exception,
    cancellation included, is recorded on the span and re-raised unchanged.
    """
    parent = context_from_traceparent(ctx.traceparent)
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes={**context_attributes(ctx), **attributes},
        # Handled by _record_failure, which keeps the status description free of exception messages.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        # Fall back to the caller's traceparent when the tracer produced no valid span (a no-op tracer),
        # so the chain below still stays in the caller's trace.
        child = ctx.child(traceparent=traceparent_of(span) or ctx.traceparent)
        try:
            yield span, child
        except RaygentError as exc:
            if exc.status < 400:
                # Held for a person (approval, quarantine) or parked: waiting, not failed.
                span.add_event("raygent.held", {"raygent.held.reason": exc.slug})
                span.set_attribute("raygent.policy.decision", "require_approval")
            else:
                _record_failure(span, exc)
            raise
        except BaseException as exc:
            _record_failure(span, exc)
            raise


class TracingModelInterceptor(ModelInterceptor):
    """Wrap each model call in a ``chat`` span (kind CLIENT) with GenAI usage and routing attributes.

    The model is chosen by the router below this interceptor, so request/response model, provider and
    the span's final name are filled in from the output once the call returns.

    Args:
        tracer: This process's tracer (see :func:`raygent.telemetry.setup.tracer_for`).
    """

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        """Trace one model call and pass it on with the span's traceparent in ``inp.ctx``."""
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "raygent.request.message_count": len(inp.messages),
            "raygent.request.tool_count": len(inp.tools),
        }
        if inp.latency_budget_ms is not None:
            attributes["raygent.latency_budget_ms"] = inp.latency_budget_ms
        call_span = _call_span(self._tracer, "chat", kind=SpanKind.CLIENT, ctx=inp.ctx, attributes=attributes)
        with call_span as (span, child):
            out = await self.next.call_model(replace(inp, ctx=child))
            span.update_name(f"chat {out.model or out.backend}")
            span.set_attributes(
                {
                    "gen_ai.request.model": out.model,
                    "gen_ai.response.model": out.model,
                    "gen_ai.provider.name": f"raygent.{out.backend}",
                    "gen_ai.usage.input_tokens": out.usage.input_tokens,
                    "gen_ai.usage.output_tokens": out.usage.output_tokens,
                    "gen_ai.response.finish_reasons": (out.finish_reason,),
                    "raygent.backend": out.backend,
                    "raygent.route.reason": out.route_reason,
                    "raygent.cost.usd": out.cost_usd,
                    "raygent.response.tool_call_count": len(out.tool_calls),
                }
            )
            return out


class TracingToolInterceptor(ToolInterceptor):
    """Wrap each tool call in an ``execute_tool`` span (kind INTERNAL).

    A tool that returns ``is_error=True`` marks the span ERROR with ``error.type="tool_error"``: the call
    failed even though nothing was raised.

    Args:
        tracer: This process's tracer (see :func:`raygent.telemetry.setup.tracer_for`).
        redactor: When given, the call's arguments are recorded after redaction as
            ``gen_ai.tool.call.arguments``; without one, arguments are not recorded at all.
    """

    def __init__(self, tracer: Tracer, *, redactor: ArgumentRedactor | None = None) -> None:
        self._tracer = tracer
        self._redactor = redactor

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        """Trace one tool call and pass it on with the span's traceparent in ``inp.ctx``."""
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": inp.call.name,
            "gen_ai.tool.call.id": inp.call.id,
        }
        if self._redactor is not None:
            attributes["gen_ai.tool.call.arguments"] = self._redactor.attribute(
                inp.call.name, inp.call.arguments
            )
        name = f"execute_tool {inp.call.name}"
        call_span = _call_span(self._tracer, name, kind=SpanKind.INTERNAL, ctx=inp.ctx, attributes=attributes)
        with call_span as (span, child):
            out = await self.next.call_tool(replace(inp, ctx=child))
            span.set_attributes({"raygent.tool.is_error": out.is_error, "raygent.cost.usd": out.cost_usd})
            if out.is_error:
                span.set_attribute("error.type", _TOOL_ERROR_TYPE)
                span.set_status(Status(StatusCode.ERROR, _TOOL_ERROR_TYPE))
            return out
