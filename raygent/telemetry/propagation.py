"""W3C ``traceparent`` strings: how trace context crosses Ray process boundaries.

Agents, the router and the tool gateway each run in their own worker process with their own tracer
provider, so context is never implicit: the caller's span is written into ``CallContext.traceparent`` and
the callee rebuilds a parent context from it.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["context_from_traceparent", "span_id_hex", "trace_id_hex", "traceparent_of"]

_TRACEPARENT = "traceparent"
# Stateless, so sharing one instance across calls and threads is safe.
_PROPAGATOR = TraceContextTextMapPropagator()


def traceparent_of(span_or_context: Span | Context | None = None) -> str | None:
    """The W3C ``traceparent`` of a span, a context, or the current context.

    Args:
        span_or_context: A span, a context holding a span, or ``None`` for the current context.

    Returns:
        The ``traceparent`` header value, or ``None`` when there is no valid span (e.g. no span is
        active). An unsampled span still yields a value (flags ``00``), so the sampling decision
        travels with it.
    """
    if isinstance(span_or_context, Span):
        context: Context | None = trace.set_span_in_context(span_or_context, Context())
    else:
        context = span_or_context
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier.get(_TRACEPARENT)


def context_from_traceparent(tp: str | None) -> Context:
    """Build a parent context from a ``traceparent`` string.

    Args:
        tp: A W3C ``traceparent`` value, or ``None``.

    Returns:
        A context whose current span is the remote parent, or an empty context (so a span started with
        it becomes a new root) when ``tp`` is ``None``, empty or malformed. Never raises: a bad header
        from a caller must not fail the call it rides on.
    """
    if not tp or not isinstance(tp, str):
        return Context()
    try:
        # Extract into an empty context so whatever span is current here never leaks into the result.
        context = _PROPAGATOR.extract({_TRACEPARENT: tp}, context=Context())
    except Exception:  # the propagator validates, but a bad header must never break a call
        return Context()
    if not trace.get_current_span(context).get_span_context().is_valid:
        return Context()
    return context


def trace_id_hex(tp: str | None) -> str | None:
    """The trace id (32 lowercase hex digits) of a ``traceparent``, or ``None`` when it is not valid."""
    span_context = trace.get_current_span(context_from_traceparent(tp)).get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def span_id_hex(tp: str | None) -> str | None:
    """The parent span id (16 lowercase hex digits) of a ``traceparent``, or ``None`` when not valid."""
    span_context = trace.get_current_span(context_from_traceparent(tp)).get_span_context()
    return format(span_context.span_id, "016x") if span_context.is_valid else None
