"""Audit interceptors: one hash-chained record per stage of every step.

The model interceptor runs in the router and the tool interceptor in the gateway, outside the agent's
process, so an agent cannot skip them. Agents write only the run's bookends (the prompt they were given
and the action they took) through :class:`AuditWriter`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raygent.core.clock import Clock
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
from raygent.core.store.base import AuditDraft, AuditKind, Store, canonical_json, sha256_hex
from raygent.governance.decision import CURRENT_DECISION
from raygent.governance.errors import ApprovalRequiredError
from raygent.governance.redaction import Redactor
from raygent.telemetry.propagation import trace_id_hex

__all__ = ["AuditModelInterceptor", "AuditToolInterceptor", "AuditWriter"]


class AuditWriter:
    """Builds drafts from a call context and appends them to the store's chain."""

    def __init__(self, store: Store, clock: Clock, *, redactor: Callable[[Any], Any] | None = None) -> None:
        self._store = store
        self._clock = clock
        # Payloads are redacted before they are hashed into the chain: secrets, secret-named keys and
        # the fleet's configured PII never reach the store (see raygent.governance.redaction).
        self._redact = redactor or Redactor()

    def draft(self, ctx: CallContext, kind: AuditKind, payload: dict[str, Any]) -> AuditDraft:
        body = {"step": ctx.step, **payload}
        if ctx.caller_chain:
            body["caller_chain"] = list(ctx.caller_chain)
        if ctx.requester:  # who asked, and for whom (governed fleets)
            body["requester"] = ctx.requester
        if ctx.end_user:
            body["end_user"] = ctx.end_user
        return AuditDraft(
            ts=self._clock.now(),
            kind=kind,
            run_id=ctx.run_id,
            session_id=ctx.session_id,
            agent=ctx.agent,
            identity=ctx.identity,
            payload=self._redact(body),
            trace_id=trace_id_hex(ctx.traceparent),
        )

    async def write(self, ctx: CallContext, kind: AuditKind, payload: dict[str, Any]) -> None:
        await self._store.append_audit([self.draft(ctx, kind, payload)])

    async def write_many(self, drafts: list[AuditDraft]) -> None:
        if drafts:
            await self._store.append_audit(drafts)


def _error_payload(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RaygentError):
        return {"error_type": exc.slug, "detail": exc.detail, "retryable": exc.retryable}
    return {"error_type": type(exc).__name__, "detail": "internal error"}


class AuditModelInterceptor(ModelInterceptor):
    """Records ``model_call`` (route, tokens, cost) and ``reasoning`` (text beside tool calls)."""

    def __init__(self, writer: AuditWriter) -> None:
        self._writer = writer

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        ctx = inp.ctx
        messages_sha = sha256_hex(canonical_json([m.to_dict() for m in inp.messages]))
        try:
            out = await self.next.call_model(inp)
        except BaseException as exc:
            await self._writer.write(
                ctx, "error", {"stage": "model_call", "messages_sha256": messages_sha, **_error_payload(exc)}
            )
            raise
        drafts = [
            self._writer.draft(
                ctx,
                "model_call",
                {
                    "backend": out.backend,
                    "model": out.model,
                    "route_reason": out.route_reason,
                    "prompt_id": ctx.prompt_id,
                    "prompt_version": ctx.prompt_version,
                    "prompt_sha256": ctx.prompt_sha256,
                    "messages_sha256": messages_sha,
                    "input_tokens": out.usage.input_tokens,
                    "output_tokens": out.usage.output_tokens,
                    "cost_usd": round(out.cost_usd, 8),
                    "finish_reason": out.finish_reason,
                    "tool_calls": [c.name for c in out.tool_calls],
                    # The full answer, so `raygent replay` can re-run the step loop against it.
                    "output": {
                        "text": out.text,
                        "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in out.tool_calls],
                    },
                },
            )
        ]
        if out.tool_calls and out.text:
            drafts.append(self._writer.draft(ctx, "reasoning", {"text": out.text}))
        await self._writer.write_many(drafts)
        return out


class AuditToolInterceptor(ToolInterceptor):
    """Records ``tool_call`` before the tool runs and ``backend_response`` after it."""

    def __init__(self, writer: AuditWriter) -> None:
        self._writer = writer

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        ctx, call = inp.ctx, inp.call
        # Written before execution: if the process dies during a side effect, the intent is on record.
        intent: dict[str, Any] = {"tool": call.name, "call_id": call.id, "arguments": call.arguments}
        decision = CURRENT_DECISION.get()
        if decision is not None:
            intent["policy"] = decision.to_audit()  # why it was allowed, in the same record
        await self._writer.write(ctx, "tool_call", intent)
        try:
            out = await self.next.call_tool(inp)
        except ApprovalRequiredError as held:
            # A delegated run parked on a held call; this run parks with it (not a failure).
            await self._writer.write(
                ctx, "approval", {"event": "parked", "tool": call.name, "call_id": call.id, **held.extra}
            )
            raise
        except BaseException as exc:
            await self._writer.write(
                ctx,
                "error",
                {"stage": "tool_call", "tool": call.name, "call_id": call.id, **_error_payload(exc)},
            )
            raise
        await self._writer.write(
            ctx,
            "backend_response",
            {
                "tool": call.name,
                "call_id": call.id,
                "is_error": out.is_error,
                "result": out.result,
                "latency_ms": round(out.latency_s * 1000, 3),
            },
        )
        return out
