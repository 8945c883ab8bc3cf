"""The ``mq`` tool kind: the tool's arguments are the request message, the reply is the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raygent.core.clock import Clock
from raygent.core.config import MqToolSpec, RabbitMqTransportSpec
from raygent.integrations.context import ToolContext
from raygent.integrations.errors import ToolPendingError
from raygent.integrations.mq.bridge import CallMeta, MqBridge, ReplyListener
from raygent.integrations.mq.codec import Codec, build_codec
from raygent.integrations.mq.envelope import (
    HEADER_TOOL,
    HEADER_TRACEPARENT,
    Envelope,
    Transport,
    correlation_id_for,
)
from raygent.integrations.mq.pending import PendingReplies, SQLitePendingReplies
from raygent.integrations.python_tool import json_result

__all__ = ["HEADER_RUN_ID", "MqToolExecutor", "build_transport"]

HEADER_RUN_ID = "x-raygent-run-id"


def build_transport(spec: MqToolSpec) -> Transport:
    """The transport a spec names; asynchronous tools get a durable reply address."""
    durable = spec.async_after_ms is not None
    if isinstance(spec.transport, RabbitMqTransportSpec):
        from raygent.integrations.mq.rabbitmq import RabbitMqTransport

        return RabbitMqTransport(spec.transport, durable_replies=durable)
    from raygent.integrations.mq.redis_streams import RedisStreamsTransport

    return RedisStreamsTransport(spec.transport, durable_replies=durable)


class MqToolExecutor:
    """One ``mq`` tool in one gateway replica.

    Args:
        name: The tool's name (part of every correlation id).
        spec: Its settings.
        base_dir: Where the layout file is resolved.
        state_dir: Where asynchronous calls' pending records live (``mq_pending.db``).
        clock: Time source.
        transport: Override the transport the spec names (tests, custom brokers).
    """

    def __init__(
        self,
        name: str,
        spec: MqToolSpec,
        *,
        base_dir: Path,
        state_dir: Path,
        clock: Clock,
        transport: Transport | None = None,
        pending: PendingReplies | None = None,
    ) -> None:
        self._name = name
        self._spec = spec
        self._base_dir = base_dir
        self._clock = clock
        self._codec: Codec | None = None
        self._pending: PendingReplies | None = None
        if spec.async_after_ms:
            self._pending = pending or SQLitePendingReplies(state_dir / "mq_pending.db")
        self.bridge = MqBridge(transport or build_transport(spec), clock=clock, pending=self._pending)

    @property
    def parks(self) -> bool:
        """Whether a slow call parks its run (``async_mode: park``) instead of waiting in it."""
        return self._spec.async_after_ms is not None and self._spec.async_mode == "park"

    @property
    def pending(self) -> PendingReplies | None:
        """The durable pending-reply records (asynchronous tools only)."""
        return self._pending

    @property
    def async_timeout_s(self) -> float:
        return self._spec.async_timeout_s

    @property
    def codec(self) -> Codec:
        if self._codec is None:
            self._codec = build_codec(self._spec.codec, base_dir=self._base_dir)
        return self._codec

    def add_listener(self, listener: ReplyListener) -> None:
        """Status callback: called when an asynchronous call's reply has been recorded."""
        self.bridge.add_listener(listener)

    def request_for(self, ctx: ToolContext, arguments: dict[str, Any]) -> Envelope:
        """The message a call sends (same ids for the same call, however often it is sent)."""
        cid = correlation_id_for(self._name, ctx.idempotency_key)
        headers = {HEADER_TOOL: self._name, HEADER_RUN_ID: ctx.run_id}
        if ctx.traceparent:
            headers[HEADER_TRACEPARENT] = ctx.traceparent
        return Envelope(
            self.codec.encode(arguments), cid, cid, content_type=self.codec.content_type, headers=headers
        )

    async def call(self, ctx: ToolContext, arguments: dict[str, Any], *, timeout_s: float) -> Any:
        spec = self._spec
        request = self.request_for(ctx, arguments)
        meta = CallMeta(self._name, ctx.tool_call_id, ctx.run_id)
        if spec.async_after_ms is None:
            reply = await self.bridge.call(
                request,
                meta=meta,
                timeout_s=timeout_s,
                resend_after_s=spec.resend_after_s,
                max_sends=spec.max_sends,
            )
        else:
            async_after_s = min(spec.async_after_ms / 1000, timeout_s)
            try:
                reply = await self.bridge.call(
                    request,
                    meta=meta,
                    timeout_s=spec.async_timeout_s,
                    async_after_s=async_after_s,
                    resend_after_s=spec.resend_after_s,
                    max_sends=spec.max_sends,
                )
            except ToolPendingError:
                if spec.async_mode == "park":
                    raise
                # The request is durably on record; keep this call waiting as long as the run may.
                wait_s = spec.async_timeout_s
                if ctx.deadline_ts is not None:
                    wait_s = min(wait_s, max(0.0, ctx.deadline_ts - self._clock.now()))
                reply = await self.bridge.wait(request.correlation_id, timeout_s=wait_s)
        return json_result(self.codec.decode(reply.body))

    async def aclose(self) -> None:
        await self.bridge.close()
        if self._pending is not None:
            await self._pending.aclose()
