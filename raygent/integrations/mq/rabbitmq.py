"""RabbitMQ transport (aio-pika, AMQP 0-9-1).

The request queue is a durable *quorum* queue: messages are persistent, every publish waits for the
broker's confirm, and the queue itself dead-letters a message that was delivered ``delivery_limit``
times without being acknowledged (a responder that crashes on it every time) to the dead-letter queue.
Responders also dead-letter what they can tell is malformed (``reject(requeue=False)``).

Replies of synchronous calls go to an exclusive, server-named queue (the classic RPC pattern: nothing
outlives the caller that waits for them). Asynchronous calls use a durable named reply queue so a reply
that arrives while the gateway restarts waits for the next one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
)
from aio_pika.exceptions import AMQPError, DeliveryError

from raygent.core.config import RabbitMqTransportSpec
from raygent.integrations.errors import TransportError
from raygent.integrations.mq.envelope import Delivery, Envelope, ReplyHandler

__all__ = ["RabbitMqDelivery", "RabbitMqRequestSource", "RabbitMqTransport", "declare_request_queue"]


def _dlq(spec: RabbitMqTransportSpec) -> str:
    return spec.dead_letter_queue or f"{spec.request_queue}.dlq"


async def declare_request_queue(channel: AbstractChannel, spec: RabbitMqTransportSpec) -> AbstractQueue:
    """Declare the dead-letter queue and the request queue; both sides call this with the same spec.

    Raises:
        TransportError: The queue exists with other arguments (e.g. a classic queue of the same name).
    """
    try:
        await channel.declare_queue(_dlq(spec), durable=True, arguments={"x-queue-type": "quorum"})
        return await channel.declare_queue(
            spec.request_queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": _dlq(spec),
                "x-delivery-limit": spec.delivery_limit,
            },
        )
    except AMQPError as exc:
        raise TransportError(f"cannot declare queue {spec.request_queue!r}: {exc}") from None


def _to_message(envelope: Envelope) -> aio_pika.Message:
    return aio_pika.Message(
        envelope.body,
        headers=dict(envelope.headers),
        content_type=envelope.content_type,
        delivery_mode=DeliveryMode.PERSISTENT,
        correlation_id=envelope.correlation_id,
        message_id=envelope.message_id,
        reply_to=envelope.reply_to or None,
    )


def _from_message(message: AbstractIncomingMessage) -> Envelope:
    headers = {
        str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in (message.headers or {}).items()
    }
    return Envelope(
        body=message.body,
        correlation_id=message.correlation_id or "",
        message_id=message.message_id or "",
        reply_to=message.reply_to or "",
        content_type=message.content_type or "application/octet-stream",
        headers=headers,
    )


async def _connect(url: str) -> tuple[AbstractRobustConnection, AbstractChannel]:
    try:
        connection = await aio_pika.connect_robust(url, timeout=10)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    except (AMQPError, OSError) as exc:
        raise TransportError(f"cannot connect to RabbitMQ: {exc}") from None
    return connection, channel


class RabbitMqTransport:
    """The caller's side: publishes to the request queue, consumes its reply queue.

    Args:
        spec: Queues and broker URL.
        durable_replies: Use the durable ``reply_queue`` (asynchronous calls) instead of an exclusive one.
    """

    def __init__(self, spec: RabbitMqTransportSpec, *, durable_replies: bool = False) -> None:
        self._spec = spec
        self._durable = durable_replies
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._reply_queue = ""

    @property
    def reply_to(self) -> str:
        return self._reply_queue

    async def start(self, on_reply: ReplyHandler) -> None:
        self._connection, self._channel = await _connect(self._spec.url)
        await declare_request_queue(self._channel, self._spec)
        try:
            if self._durable:
                name = self._spec.reply_queue or f"{self._spec.request_queue}.reply"
                queue = await self._channel.declare_queue(
                    name, durable=True, arguments={"x-queue-type": "quorum"}
                )
            else:
                queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        except AMQPError as exc:
            raise TransportError(f"cannot declare the reply queue: {exc}") from None
        self._reply_queue = queue.name

        async def consume(message: AbstractIncomingMessage) -> None:
            try:
                await on_reply(_from_message(message))
            except Exception:
                # Not recorded: give it back so it is delivered again rather than lost.
                await message.nack(requeue=True)
                raise
            await message.ack()

        await queue.consume(consume)

    async def publish(self, request: Envelope) -> None:
        if self._channel is None:
            raise TransportError("the RabbitMQ transport is not started")
        try:
            await self._channel.default_exchange.publish(
                _to_message(request), routing_key=self._spec.request_queue, mandatory=True, timeout=10
            )
        except DeliveryError as exc:
            raise TransportError(f"RabbitMQ did not confirm the request: {exc}") from None
        except (TimeoutError, AMQPError, OSError) as exc:
            raise TransportError(f"cannot publish to {self._spec.request_queue!r}: {exc!r}") from None

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = None


class RabbitMqDelivery:
    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message
        self._envelope = _from_message(message)

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    @property
    def delivery_count(self) -> int:
        # Quorum queues count earlier deliveries in x-delivery-count (absent on the first one).
        previous = (self._message.headers or {}).get("x-delivery-count", 0)
        return 1 + int(previous) if isinstance(previous, int | str) else 1

    async def ack(self) -> None:
        await self._message.ack()

    async def retry_later(self) -> None:
        await self._message.nack(requeue=True)

    async def dead_letter(self, reason: str) -> None:
        # The queue's dead-letter arguments route a rejected message to the DLQ.
        await self._message.reject(requeue=False)


class RabbitMqRequestSource:
    """The responder's side: consumes the request queue, publishes replies to each ``reply_to``.

    Args:
        spec: Queues and broker URL (the same spec as the callers').
        prefetch: Requests in flight at once in this responder.
    """

    def __init__(self, spec: RabbitMqTransportSpec, *, prefetch: int = 16) -> None:
        self._spec = spec
        self._prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None

    async def start(self) -> None:
        self._connection, self._channel = await _connect(self._spec.url)
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await declare_request_queue(self._channel, self._spec)

    async def deliveries(self) -> AsyncIterator[Delivery]:
        if self._queue is None:
            raise TransportError("the RabbitMQ request source is not started")
        async with self._queue.iterator() as messages:
            async for message in messages:
                yield RabbitMqDelivery(message)

    async def reply(self, reply_to: str, reply: Envelope) -> None:
        if self._channel is None:
            raise TransportError("the RabbitMQ request source is not started")
        if not reply_to:
            return  # a request nobody waits for (fire-and-forget) gets no reply
        try:
            await self._channel.default_exchange.publish(_to_message(reply), routing_key=reply_to, timeout=10)
        except (TimeoutError, AMQPError, OSError) as exc:
            raise TransportError(f"cannot publish the reply to {reply_to!r}: {exc!r}") from None

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = self._queue = None
