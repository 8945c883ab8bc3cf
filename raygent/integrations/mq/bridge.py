"""The MQ bridge: a tool call as request/reply over a queue.

One bridge per tool per gateway replica. It sends the request (durably, with a publisher confirm), waits
for the reply that carries the same correlation id, sends the request again with the same message id if
``resend_after_s`` passes (the responder deduplicates on it, so the effect happens once), and gives up
with a clear timeout error. Replies to calls that already completed, and second replies, are ignored.

Asynchronous calls (``async_after_s``) are recorded in a durable :class:`PendingReplies` store before the
request leaves; past ``async_after_s`` the call raises :class:`ToolPendingError` while the request stays
in flight, the reply is recorded when it arrives (also by a bridge started after a restart, since the
reply address is then durable) and the same call made again returns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from raygent.core.clock import Clock
from raygent.integrations.errors import RemoteToolError, ToolPendingError, ToolTimeoutError
from raygent.integrations.mq.envelope import HEADER_ERROR, Envelope, Transport
from raygent.integrations.mq.pending import PendingRecord, PendingReplies

__all__ = ["BridgeStats", "CallMeta", "MqBridge", "ReplyListener"]

_log = logging.getLogger(__name__)

ReplyListener = Callable[[PendingRecord], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallMeta:
    """Who a call belongs to; stored with an asynchronous call's pending record."""

    tool: str
    call_id: str
    run_id: str


@dataclass(slots=True)
class BridgeStats:
    sent: int = 0
    resent: int = 0
    replies: int = 0
    ignored_replies: int = 0  # duplicates, late replies, replies to calls this bridge does not know


class MqBridge:
    """Request/reply over a :class:`Transport`.

    Args:
        transport: Where requests go and replies come from.
        clock: Time source.
        pending: Durable record of asynchronous calls; None for a bridge that only makes sync calls.
        poll_s: How often an asynchronous waiter also checks the store, for a reply that another gateway
            replica consumed from a shared reply queue.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        clock: Clock,
        pending: PendingReplies | None = None,
        poll_s: float = 0.1,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._pending = pending
        self._poll_s = poll_s
        self._waiters: dict[str, asyncio.Future[Envelope]] = {}
        self._listeners: list[ReplyListener] = []
        self._start_lock = asyncio.Lock()
        self._started = False
        self.stats = BridgeStats()

    def add_listener(self, listener: ReplyListener) -> None:
        """Called with the record when an asynchronous call's reply has been recorded (status callback)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        async with self._start_lock:
            if not self._started:
                await self._transport.start(self._on_reply)
                self._started = True

    async def close(self) -> None:
        for future in self._waiters.values():
            future.cancel()
        self._waiters.clear()
        await self._transport.close()
        self._started = False

    # --------------------------------------------------------------------------------------- replies

    async def _on_reply(self, reply: Envelope) -> None:
        cid = reply.correlation_id
        self.stats.replies += 1
        if self._pending is not None:
            # Record first: the transport acknowledges the reply only after this returns.
            record = await self._pending.record_reply(reply, now=self._clock.now())
            if record is None and cid not in self._waiters:
                self.stats.ignored_replies += 1
                return
            if record is not None:
                await self._notify(record)
        waiter = self._waiters.get(cid)
        if waiter is None or waiter.done():
            if self._pending is None:
                self.stats.ignored_replies += 1
            return
        waiter.set_result(reply)

    async def _notify(self, record: PendingRecord) -> None:
        for listener in self._listeners:
            try:
                await listener(record)
            except Exception:  # a listener's failure must not lose the reply or block the others
                _log.exception("MQ reply listener failed for %s", record.correlation_id)

    # ------------------------------------------------------------------------------------------ calls

    async def call(
        self,
        request: Envelope,
        *,
        meta: CallMeta,
        timeout_s: float,
        resend_after_s: float | None = None,
        max_sends: int = 1,
        async_after_s: float | None = None,
    ) -> Envelope:
        """Send ``request`` and return its reply.

        Args:
            request: The message; its ``correlation_id`` pairs the reply, ``message_id`` dedups resends.
            meta: Tool, call and run of this call (stored with an asynchronous call).
            timeout_s: How long to wait for the reply in all (an asynchronous call: how long its
                pending record lives).
            resend_after_s: Send again (same ids) after this long without a reply.
            max_sends: Most sends of one request.
            async_after_s: Past this, raise :class:`ToolPendingError` and leave the call in flight.

        Raises:
            ToolTimeoutError: No reply within ``timeout_s``.
            ToolPendingError: An asynchronous call outlived ``async_after_s`` (still in flight).
            RemoteToolError: The responder answered with an error reply.
            TransportError: The broker refused the request.
        """
        await self.start()
        cid = request.correlation_id
        if cid in self._waiters:
            # The same call is already waiting in this process: wait beside it rather than send twice.
            return await self.wait(cid, timeout_s=async_after_s or timeout_s, pending_after=async_after_s)
        now = self._clock.now()
        send = True
        if self._pending is not None:
            record, inserted = await self._pending.register(
                PendingRecord(cid, meta.tool, meta.call_id, meta.run_id, "pending", now, now + timeout_s)
            )
            send = inserted
            if record.state == "replied" and record.reply is not None:
                return _check(record.reply)
            if record.state == "expired" or (not inserted and record.deadline_ts <= now):
                raise ToolTimeoutError(f"the call {meta.call_id} expired before its reply arrived")
            timeout_s = min(timeout_s, record.deadline_ts - now)
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._waiters[cid] = future
        try:
            if send:
                await self._transport.publish(self._addressed(request))
                self.stats.sent += 1
            return await self._await_reply(
                request, future, timeout_s, resend_after_s, max_sends, async_after_s
            )
        finally:
            self._waiters.pop(cid, None)

    def _addressed(self, request: Envelope) -> Envelope:
        return Envelope(
            body=request.body,
            correlation_id=request.correlation_id,
            message_id=request.message_id,
            reply_to=self._transport.reply_to,
            content_type=request.content_type,
            headers=request.headers,
        )

    async def _await_reply(
        self,
        request: Envelope,
        future: asyncio.Future[Envelope],
        timeout_s: float,
        resend_after_s: float | None,
        max_sends: int,
        async_after_s: float | None,
    ) -> Envelope:
        start = self._clock.monotonic()
        sends = 1
        while True:
            elapsed = self._clock.monotonic() - start
            marks = [timeout_s]
            if async_after_s is not None:
                marks.append(async_after_s)
            if resend_after_s is not None and sends < max_sends:
                marks.append(resend_after_s * sends)
            if self._pending is not None:
                marks.append(elapsed + self._poll_s)
            wait_s = max(0.0, min(marks) - elapsed)
            with contextlib.suppress(TimeoutError):
                return _check(await asyncio.wait_for(asyncio.shield(future), wait_s))
            elapsed = self._clock.monotonic() - start
            stored = await self._stored_reply(request.correlation_id)
            if stored is not None:
                return _check(stored)
            if async_after_s is not None and elapsed >= async_after_s:
                raise ToolPendingError(
                    f"no reply within {async_after_s * 1000:g} ms; the request is in flight and its reply "
                    "will be recorded",
                    extra={"correlation_id": request.correlation_id},
                )
            if elapsed >= timeout_s:
                if self._pending is not None:
                    await self._pending.expire(request.correlation_id)
                raise ToolTimeoutError(f"no reply within {timeout_s:g} s")
            if resend_after_s is not None and sends < max_sends and elapsed >= resend_after_s * sends:
                await self._transport.publish(self._addressed(request))
                sends += 1
                self.stats.resent += 1

    async def _stored_reply(self, correlation_id: str) -> Envelope | None:
        if self._pending is None:
            return None
        record = await self._pending.get(correlation_id)
        return record.reply if record is not None and record.state == "replied" else None

    async def wait(
        self, correlation_id: str, *, timeout_s: float, pending_after: float | None = None
    ) -> Envelope:
        """Wait for the reply of a call already in flight (e.g. one that went asynchronous).

        Raises:
            ToolTimeoutError: No reply within ``timeout_s`` (the record expires when it is past its own
                deadline too).
        """
        await self.start()
        future = self._waiters.get(correlation_id)
        own = future is None
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[correlation_id] = future
        start = self._clock.monotonic()
        try:
            while True:
                stored = await self._stored_reply(correlation_id)
                if stored is not None:
                    return _check(stored)
                elapsed = self._clock.monotonic() - start
                if elapsed >= timeout_s:
                    await self._expire_if_due(correlation_id)
                    raise ToolTimeoutError(f"no reply within {timeout_s:g} s")
                if pending_after is not None and elapsed >= pending_after:
                    raise ToolPendingError(
                        "the request is still in flight", extra={"correlation_id": correlation_id}
                    )
                step = min(timeout_s - elapsed, self._poll_s if self._pending is not None else timeout_s)
                with contextlib.suppress(TimeoutError):
                    return _check(await asyncio.wait_for(asyncio.shield(future), step))
        finally:
            if own:
                self._waiters.pop(correlation_id, None)

    async def _expire_if_due(self, correlation_id: str) -> None:
        if self._pending is None:
            return
        record = await self._pending.get(correlation_id)
        if record is not None and record.deadline_ts <= self._clock.now():
            await self._pending.expire(correlation_id)


def _check(reply: Envelope) -> Envelope:
    if reply.is_error:
        detail = reply.headers.get(HEADER_ERROR) or reply.body.decode("utf-8", "replace")[:300]
        raise RemoteToolError(f"the backend rejected the request: {detail}")
    return reply
