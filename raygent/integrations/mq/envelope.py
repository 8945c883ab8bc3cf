"""What travels over a queue, and the two protocols a transport implements.

A transport is pluggable: the bridge (caller side) needs a :class:`Transport`, a responder (the legacy
side) a :class:`RequestSource`. RabbitMQ and Redis Streams ship here; an IBM MQ or AMQP 1.0 transport
implements the same two protocols and nothing above them changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "HEADER_ERROR",
    "HEADER_REPLY_TTL_S",
    "HEADER_STATUS",
    "HEADER_TOOL",
    "HEADER_TRACEPARENT",
    "Delivery",
    "Envelope",
    "ReplyHandler",
    "RequestSource",
    "Transport",
    "correlation_id_for",
]

HEADER_TRACEPARENT = "traceparent"  # W3C trace context, so one trace spans the hop
HEADER_TOOL = "x-raygent-tool"
HEADER_STATUS = "x-raygent-status"  # on replies: "ok" or "error"
HEADER_ERROR = "x-raygent-error"  # on error replies: one plain sentence
HEADER_REPLY_TTL_S = "x-raygent-reply-ttl-s"  # a throwaway reply address may be expired by the responder


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message. ``message_id`` is the idempotency key the responder deduplicates on; it stays the
    same when a request is sent again, and so does ``correlation_id``, which pairs a reply with its call."""

    body: bytes
    correlation_id: str
    message_id: str
    reply_to: str = ""
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.headers.get(HEADER_STATUS) == "error"


def correlation_id_for(tool: str, idempotency_key: str) -> str:
    """Deterministic per tool call, so a retried or resumed call finds its reply instead of sending anew."""
    return "rg-" + hashlib.sha256(f"{tool}\x00{idempotency_key}".encode()).hexdigest()[:32]


ReplyHandler = Callable[[Envelope], Awaitable[None]]


class Transport(Protocol):
    """The caller's side of request/reply."""

    @property
    def reply_to(self) -> str:
        """The address replies to this transport's requests go to."""
        ...

    async def start(self, on_reply: ReplyHandler) -> None:
        """Connect, declare what is needed and start delivering replies to ``on_reply``.

        A reply is acknowledged to the broker only after ``on_reply`` returned, so a reply that was not
        recorded is delivered again (after a restart too, when the reply address is durable).
        """
        ...

    async def publish(self, request: Envelope) -> None:
        """Send durably; returns once the broker has taken responsibility (publisher confirm)."""
        ...

    async def close(self) -> None: ...


class Delivery(Protocol):
    """One request as a responder receives it."""

    @property
    def envelope(self) -> Envelope: ...

    @property
    def delivery_count(self) -> int:
        """1 on the first delivery; more after a responder died or gave the message back."""
        ...

    async def ack(self) -> None: ...

    async def retry_later(self) -> None:
        """Give the message back for another delivery (counts towards the delivery limit)."""
        ...

    async def dead_letter(self, reason: str) -> None:
        """Move the message to the dead-letter queue (poison message) and acknowledge it."""
        ...


class RequestSource(Protocol):
    """The responder's side: requests in, replies out."""

    async def start(self) -> None: ...

    def deliveries(self) -> AsyncIterator[Delivery]: ...

    async def reply(self, reply_to: str, reply: Envelope) -> None: ...

    async def close(self) -> None: ...
