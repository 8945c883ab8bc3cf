"""The responder side of request/reply: what a legacy adapter runs to answer requests exactly once.

Delivery is at least once (a responder may die after doing the work and before acknowledging, and the
bridge may send a request again), so the responder deduplicates on the request's ``message_id``: the
work's effect and the reply are committed in one SQLite transaction keyed by it, and a request seen
again is answered with the stored reply without redoing the work. A request the handler cannot read
(:class:`PoisonMessageError`) is answered with an error reply, so the caller fails fast with a clear
error, and moved to the dead-letter queue; a request that keeps failing is dead-lettered once it was
delivered ``delivery_limit`` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from raygent.core.errors import RaygentError
from raygent.integrations.mq.envelope import (
    HEADER_ERROR,
    HEADER_REPLY_TTL_S,
    HEADER_STATUS,
    HEADER_TRACEPARENT,
    Delivery,
    Envelope,
    RequestSource,
)

__all__ = ["Handler", "PoisonMessageError", "Responder", "ResponderStats", "SQLiteDedup"]

_log = logging.getLogger(__name__)

Handler = Callable[[Envelope, sqlite3.Connection], bytes]
"""Does the work for one request inside the dedup transaction (write effects through the connection)
and returns the reply body. Raises :class:`PoisonMessageError` for a request it cannot read."""


class PoisonMessageError(RaygentError):
    """The request can never succeed (malformed record, unknown transaction code)."""

    status = 422
    slug = "poison-message"
    title = "Request cannot be processed"


class SQLiteDedup:
    """Processed requests by message id, with the reply, in the same database as the handler's effects.

    Args:
        path: The database file; the handler's own tables live beside ``mq_processed``.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS mq_processed (message_id TEXT PRIMARY KEY, reply BLOB NOT NULL,"
            " ts REAL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))"
        )
        self._lock = threading.Lock()

    def _process(self, envelope: Envelope, handler: Handler) -> tuple[bytes, bool]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT reply FROM mq_processed WHERE message_id=?", (envelope.message_id,)
                ).fetchone()
                if row is not None:
                    conn.execute("ROLLBACK")
                    return bytes(row[0]), True
                reply = handler(envelope, conn)
                conn.execute(
                    "INSERT INTO mq_processed (message_id, reply) VALUES (?,?)", (envelope.message_id, reply)
                )
                conn.execute("COMMIT")
                return reply, False
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def process(self, envelope: Envelope, handler: Handler) -> tuple[bytes, bool]:
        """Run ``handler`` once per message id; returns (reply, replayed)."""
        return await asyncio.to_thread(self._process, envelope, handler)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass(slots=True)
class ResponderStats:
    handled: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    retried: int = 0


class Responder:
    """Consumes a :class:`RequestSource` and answers each request once.

    Args:
        source: Where requests come from and replies go.
        handler: The work (see :data:`Handler`).
        dedup: The processed-requests record.
        delivery_limit: Deliveries after which a failing request is dead-lettered.
        tracer: Spans ``process <source>`` parented on each request's ``traceparent``.
        after_commit: Awaited between the committed work and the reply (a slow backend's latency, or a
            test's chance to kill the process at the worst moment).
        concurrency: Requests handled at once.
    """

    def __init__(
        self,
        source: RequestSource,
        handler: Handler,
        *,
        dedup: SQLiteDedup,
        delivery_limit: int = 5,
        tracer: Tracer | None = None,
        after_commit: Callable[[Envelope, bool], Awaitable[None]] | None = None,
        concurrency: int = 16,
        name: str = "requests",
    ) -> None:
        self._source = source
        self._handler = handler
        self._dedup = dedup
        self._limit = delivery_limit
        self._tracer = tracer
        self._after_commit = after_commit
        self._slots = asyncio.Semaphore(concurrency)
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = ResponderStats()

    async def run(self) -> None:
        """Serve until cancelled."""
        await self._source.start()
        try:
            async for delivery in self._source.deliveries():
                await self._slots.acquire()
                task = asyncio.create_task(self._guarded(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._source.close()

    async def _guarded(self, delivery: Delivery) -> None:
        try:
            if self._tracer is None:
                await self.handle(delivery)
                return
            # integrations may import core only, so the W3C header is read with OTel's own propagator.
            carrier = {"traceparent": delivery.envelope.headers.get(HEADER_TRACEPARENT, "")}
            parent = TraceContextTextMapPropagator().extract(carrier, context=Context())
            with self._tracer.start_as_current_span(
                f"process {self._name}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.operation.type": "process",
                    "messaging.destination.name": self._name,
                    "messaging.message.id": delivery.envelope.message_id,
                    "messaging.message.conversation_id": delivery.envelope.correlation_id,
                },
            ):
                await self.handle(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("responder failed on %s", delivery.envelope.message_id)
        finally:
            self._slots.release()

    def _reply_headers(self, request: Envelope, extra: dict[str, str]) -> dict[str, str]:
        headers = dict(extra)
        for key in (HEADER_TRACEPARENT, HEADER_REPLY_TTL_S):
            if key in request.headers:
                headers[key] = request.headers[key]
        return headers

    async def handle(self, delivery: Delivery) -> None:
        """Answer one delivery: dedup, work, reply, acknowledge (in that order)."""
        request = delivery.envelope
        if delivery.delivery_count > self._limit:
            await self._poison(delivery, f"delivered {delivery.delivery_count - 1} times without success")
            return
        try:
            body, replayed = await self._dedup.process(request, self._handler)
        except PoisonMessageError as exc:
            await self._poison(delivery, exc.detail)
            return
        except Exception:
            _log.exception("handler failed on %s; it will be delivered again", request.message_id)
            self.stats.retried += 1
            await delivery.retry_later()
            return
        if self._after_commit is not None:
            await self._after_commit(request, replayed)
        reply = Envelope(
            body=body,
            correlation_id=request.correlation_id,
            message_id=uuid.uuid4().hex,
            headers=self._reply_headers(request, {HEADER_STATUS: "ok"}),
        )
        await self._source.reply(request.reply_to, reply)
        await delivery.ack()
        self.stats.handled += 1
        self.stats.replayed += int(replayed)

    async def _poison(self, delivery: Delivery, reason: str) -> None:
        request = delivery.envelope
        error = Envelope(
            body=reason.encode(),
            correlation_id=request.correlation_id,
            message_id=uuid.uuid4().hex,
            content_type="text/plain",
            headers=self._reply_headers(request, {HEADER_STATUS: "error", HEADER_ERROR: reason[:300]}),
        )
        # Tell the caller first (it can fail fast), then park the message where people can inspect it.
        with contextlib.suppress(Exception):
            await self._source.reply(request.reply_to, error)
        await delivery.dead_letter(reason)
        self.stats.dead_lettered += 1
