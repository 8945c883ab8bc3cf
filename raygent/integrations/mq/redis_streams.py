"""Redis Streams transport: a request stream read by a consumer group.

Requests are ``XADD``-ed to the request stream; responders read it with ``XREADGROUP`` in one consumer
group, acknowledge with ``XACK`` after replying, and reclaim entries that a dead responder left pending
with ``XAUTOCLAIM`` once they have been idle ``claim_idle_ms``. An entry delivered more than
``delivery_limit`` times is moved to the dead-letter stream.

Replies go to a stream named by the request's ``reply_to``: a throwaway stream per caller for synchronous
calls (the responder sets its TTL), or the durable ``reply_stream`` for asynchronous calls, read through
its own consumer group so an unacknowledged reply survives the caller's restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from raygent.core.config import RedisStreamsTransportSpec
from raygent.integrations.errors import TransportError
from raygent.integrations.mq.envelope import HEADER_REPLY_TTL_S, Delivery, Envelope, ReplyHandler

__all__ = ["RedisStreamsDelivery", "RedisStreamsRequestSource", "RedisStreamsTransport"]

_BRIDGE_GROUP = "raygent-bridge"
_SYNC_REPLY_TTL_S = 3600
_BLOCK_MS = 1000


def _fields(envelope: Envelope) -> dict[Any, Any]:
    return {
        "body": envelope.body,
        "cid": envelope.correlation_id,
        "mid": envelope.message_id,
        "reply_to": envelope.reply_to,
        "ctype": envelope.content_type,
        "headers": json.dumps(dict(envelope.headers)),
    }


def _envelope(fields: dict[bytes, bytes]) -> Envelope:
    def text(key: str) -> str:
        return fields.get(key.encode(), b"").decode()

    try:
        headers = json.loads(text("headers") or "{}")
    except ValueError:
        headers = {}
    return Envelope(
        body=fields.get(b"body", b""),
        correlation_id=text("cid"),
        message_id=text("mid"),
        reply_to=text("reply_to"),
        content_type=text("ctype") or "application/octet-stream",
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
    )


def _raise_if_cancelled() -> None:
    """redis-py can swallow a cancellation that lands in a blocking read; honour it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _ensure_group(client: aioredis.Redis, stream: str, group: str) -> None:
    try:
        # From the start of the stream, so requests added before the first responder are not skipped.
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class RedisStreamsTransport:
    """The caller's side.

    Args:
        spec: Streams and Redis URL.
        durable_replies: Read the durable ``reply_stream`` through a consumer group (asynchronous calls)
            instead of a throwaway stream of this caller's own.
    """

    def __init__(self, spec: RedisStreamsTransportSpec, *, durable_replies: bool = False) -> None:
        self._spec = spec
        self._durable = durable_replies
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._consumer = f"bridge-{uuid.uuid4().hex[:12]}"
        self._closing = False
        if durable_replies:
            self._reply_stream = spec.reply_stream or f"{spec.request_stream}:reply"
        else:
            self._reply_stream = f"{spec.request_stream}:reply:{uuid.uuid4().hex}"

    @property
    def reply_to(self) -> str:
        return self._reply_stream

    async def start(self, on_reply: ReplyHandler) -> None:
        self._client = aioredis.Redis.from_url(self._spec.url)
        try:
            await self._client.ping()
            if self._durable:
                await _ensure_group(self._client, self._reply_stream, _BRIDGE_GROUP)
        except RedisError as exc:
            raise TransportError(f"cannot reach Redis: {exc}") from None
        self._task = asyncio.create_task(self._consume(on_reply), name=f"replies {self._reply_stream}")

    async def _consume(self, on_reply: ReplyHandler) -> None:
        assert self._client is not None  # set by start()
        last_id = "0-0"
        claimed_once = False
        # redis-py may turn a cancelled blocking read into a connection error, so the loop also checks
        # a flag instead of relying on CancelledError alone.
        while not self._closing:
            try:
                if self._durable:
                    if not claimed_once:
                        # Replies a dead predecessor read but never recorded: take them over once.
                        await self._claim(on_reply)
                        claimed_once = True
                    streams: Any = await self._client.xreadgroup(
                        _BRIDGE_GROUP, self._consumer, {self._reply_stream: ">"}, count=64, block=_BLOCK_MS
                    )
                else:
                    streams = await self._client.xread(
                        {self._reply_stream: last_id}, count=64, block=_BLOCK_MS
                    )
                _raise_if_cancelled()
                for _, entries in streams or []:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        await self._handle(on_reply, entry_id, fields)
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc) and self._durable:
                    await _ensure_group(self._client, self._reply_stream, _BRIDGE_GROUP)
                    continue
                await asyncio.sleep(0.5)
            except RedisError:
                _raise_if_cancelled()
                await asyncio.sleep(0.5)  # the connection pool reconnects; keep reading

    async def _claim(self, on_reply: ReplyHandler) -> None:
        assert self._client is not None
        start = "0-0"
        while True:
            result: Any = await self._client.xautoclaim(
                self._reply_stream, _BRIDGE_GROUP, self._consumer, min_idle_time=0, start_id=start, count=64
            )
            start, entries = result[0], result[1]
            for entry_id, fields in entries:
                if fields:
                    await self._handle(on_reply, entry_id, fields)
            if start in (b"0-0", "0-0") or not entries:
                return

    async def _handle(self, on_reply: ReplyHandler, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        assert self._client is not None
        await on_reply(_envelope(fields))
        if self._durable:
            await self._client.xack(self._reply_stream, _BRIDGE_GROUP, entry_id)

    async def publish(self, request: Envelope) -> None:
        if self._client is None:
            raise TransportError("the Redis Streams transport is not started")
        headers = dict(request.headers)
        if not self._durable:
            headers[HEADER_REPLY_TTL_S] = str(_SYNC_REPLY_TTL_S)
        envelope = Envelope(
            request.body,
            request.correlation_id,
            request.message_id,
            request.reply_to,
            request.content_type,
            headers,
        )
        try:
            # XADD returns once Redis has the entry; durability is Redis's own (AOF/RDB) setting.
            await self._client.xadd(
                self._spec.request_stream,
                _fields(envelope),
                maxlen=self._spec.max_stream_length,
                approximate=True,
            )
        except RedisError as exc:
            raise TransportError(f"cannot add to stream {self._spec.request_stream!r}: {exc}") from None

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        if self._client is not None:
            if not self._durable:
                with contextlib.suppress(RedisError):
                    await self._client.delete(self._reply_stream)
            await self._client.aclose()
        self._client = self._task = None


class RedisStreamsDelivery:
    def __init__(
        self, source: RedisStreamsRequestSource, entry_id: bytes, envelope: Envelope, delivery_count: int
    ) -> None:
        self._source = source
        self.entry_id = entry_id
        self._envelope = envelope
        self._count = delivery_count

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    @property
    def delivery_count(self) -> int:
        return self._count

    async def ack(self) -> None:
        await self._source.ack(self.entry_id)

    async def retry_later(self) -> None:
        """Leave the entry pending: it is reclaimed (XAUTOCLAIM) once idle long enough."""

    async def dead_letter(self, reason: str) -> None:
        await self._source.dead_letter(self.entry_id, self._envelope, reason)


class RedisStreamsRequestSource:
    """The responder's side.

    Args:
        spec: Streams, group and Redis URL (the same spec as the callers').
        consumer: This responder's name in the group (unique per process).
        claim_idle_ms: Entries pending this long with another consumer are taken over.
        batch: Entries read at once.
    """

    def __init__(
        self,
        spec: RedisStreamsTransportSpec,
        *,
        consumer: str | None = None,
        claim_idle_ms: int = 5000,
        batch: int = 16,
    ) -> None:
        self._spec = spec
        self._consumer = consumer or f"responder-{uuid.uuid4().hex[:12]}"
        self._claim_idle_ms = claim_idle_ms
        self._batch = batch
        self._client: aioredis.Redis | None = None

    @property
    def dead_letter_stream(self) -> str:
        return self._spec.dead_letter_stream or f"{self._spec.request_stream}:dlq"

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(self._spec.url)
        try:
            await _ensure_group(self._client, self._spec.request_stream, self._spec.group)
        except RedisError as exc:
            raise TransportError(f"cannot reach Redis: {exc}") from None

    async def _times_delivered(self, entry_id: bytes) -> int:
        assert self._client is not None
        info = await self._client.xpending_range(
            self._spec.request_stream, self._spec.group, min=entry_id, max=entry_id, count=1
        )
        return int(info[0]["times_delivered"]) if info else 1

    async def deliveries(self) -> AsyncIterator[Delivery]:
        if self._client is None:
            raise TransportError("the Redis Streams request source is not started")
        stream, group = self._spec.request_stream, self._spec.group
        while True:
            # Stuck entries first: a responder died holding them.
            claim: Any = await self._client.xautoclaim(
                stream,
                group,
                self._consumer,
                min_idle_time=self._claim_idle_ms,
                start_id="0-0",
                count=self._batch,
            )
            claimed = claim[1]
            for entry_id, fields in claimed:
                if fields:  # a trimmed entry comes back empty
                    yield RedisStreamsDelivery(
                        self, entry_id, _envelope(fields), await self._times_delivered(entry_id)
                    )
            block = None if claimed else _BLOCK_MS
            read: Any = await self._client.xreadgroup(
                group, self._consumer, {stream: ">"}, count=self._batch, block=block
            )
            _raise_if_cancelled()
            for _, entries in read or []:
                for entry_id, fields in entries:
                    yield RedisStreamsDelivery(self, entry_id, _envelope(fields), 1)

    async def ack(self, entry_id: bytes) -> None:
        assert self._client is not None
        await self._client.xack(self._spec.request_stream, self._spec.group, entry_id)

    async def dead_letter(self, entry_id: bytes, envelope: Envelope, reason: str) -> None:
        assert self._client is not None
        fields = {**_fields(envelope), "reason": reason, "source_id": entry_id}
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter_stream, fields, maxlen=self._spec.max_stream_length, approximate=True)
            pipe.xack(self._spec.request_stream, self._spec.group, entry_id)
            await pipe.execute()

    async def reply(self, reply_to: str, reply: Envelope) -> None:
        if self._client is None:
            raise TransportError("the Redis Streams request source is not started")
        if not reply_to:
            return
        ttl = reply.headers.get(HEADER_REPLY_TTL_S)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(reply_to, _fields(reply), maxlen=self._spec.max_stream_length, approximate=True)
                if ttl and ttl.isdigit():
                    pipe.expire(reply_to, int(ttl))
                await pipe.execute()
        except RedisError as exc:
            raise TransportError(f"cannot reply to {reply_to!r}: {exc}") from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None
