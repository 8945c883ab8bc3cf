"""The legacy order system's MQ adapter: a long-running process that answers "order-status-request"
messages with fixed-width EBCDIC records, the way a CICS transaction behind IBM MQ would.

Each request is answered exactly once per message id: the inquiry is logged (the transaction's effect)
and the reply stored in one SQLite transaction, so a redelivered request (this process was killed
before it acknowledged) or a resent one gets the stored reply and logs nothing new. A record that does
not match the layout is answered with an error reply and dead-lettered.

    python examples/legacy_mainframe/responder.py --transport rabbitmq --queue order-status-request
    python examples/legacy_mainframe/responder.py --transport redis_streams --queue order-status-request

It prints ``ready`` once it consumes, and ``committed <message id>`` after each committed effect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from raygent.core.config import RabbitMqTransportSpec, RedisStreamsTransportSpec
from raygent.core.errors import RaygentError
from raygent.integrations.fixedwidth import RecordLayout, load_layout
from raygent.integrations.mq.envelope import Envelope, RequestSource
from raygent.integrations.mq.responder import PoisonMessageError, Responder, SQLiteDedup
from raygent.telemetry.jsonl import JsonlSpanExporter

HERE = Path(__file__).resolve().parent


def _log(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class OrderStatusTransaction:
    """Decode the request record, look the order up, log the inquiry, encode the reply record."""

    def __init__(self, request: RecordLayout, reply: RecordLayout, orders: dict[str, dict[str, Any]]) -> None:
        self.request = request
        self.reply = reply
        self.orders = orders

    def __call__(self, envelope: Envelope, conn: sqlite3.Connection) -> bytes:
        try:
            fields = self.request.decode(envelope.body)
        except RaygentError as exc:
            raise PoisonMessageError(f"malformed ORDER-STATUS-REQUEST: {exc.detail}") from None
        order_id = str(fields["order_id"])
        order = self.orders.get(order_id)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS inquiries (message_id TEXT, order_id TEXT, ts REAL, run_id TEXT)"
        )
        conn.execute(
            "INSERT INTO inquiries VALUES (?,?,?,?)",
            (envelope.message_id, order_id, time.time(), envelope.headers.get("x-raygent-run-id", "")),
        )
        if order is None:
            return self.reply.encode({"order_id": int(order_id), "found": "N"})
        return self.reply.encode({"order_id": int(order_id), "found": "Y", **order})


def _source(args: argparse.Namespace) -> tuple[RequestSource, int]:
    if args.transport == "rabbitmq":
        from raygent.integrations.mq.rabbitmq import RabbitMqRequestSource

        spec = RabbitMqTransportSpec(
            kind="rabbitmq", url=args.url or "amqp://guest:guest@127.0.0.1:5672/", request_queue=args.queue,
            delivery_limit=args.delivery_limit,
        )  # fmt: skip
        return RabbitMqRequestSource(spec, prefetch=args.prefetch), spec.delivery_limit
    from raygent.integrations.mq.redis_streams import RedisStreamsRequestSource

    rspec = RedisStreamsTransportSpec(
        kind="redis_streams", url=args.url or "redis://127.0.0.1:6379/0", request_stream=args.queue,
        delivery_limit=args.delivery_limit,
    )  # fmt: skip
    source = RedisStreamsRequestSource(rspec, consumer=args.consumer, claim_idle_ms=args.claim_idle_ms)
    return source, rspec.delivery_limit


async def main(args: argparse.Namespace) -> None:
    layout = load_layout(Path(args.layout), encoding=args.encoding)
    orders = json.loads(Path(args.orders).read_text())  # noqa: ASYNC240 (once, before serving)
    transaction = OrderStatusTransaction(
        layout.record("ORDER-STATUS-REQUEST"), layout.record("ORDER-STATUS-REPLY"), orders
    )
    tracer = None
    if args.spans:
        provider = TracerProvider(resource=Resource.create({"service.name": "legacy-order-system"}))
        provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(args.spans)))
        tracer = provider.get_tracer("legacy-order-system")
    latency_s = args.latency_ms / 1000

    async def after_commit(request: Envelope, replayed: bool) -> None:
        _log(f"{'replayed' if replayed else 'committed'} {request.message_id}")
        if latency_s:
            await asyncio.sleep(latency_s)  # the mainframe's own latency, after the work is done

    source, limit = _source(args)
    dedup = SQLiteDedup(Path(args.state_dir) / "order_system.db")
    responder = Responder(
        source, transaction, dedup=dedup, delivery_limit=limit, tracer=tracer, after_commit=after_commit,
        name=args.queue,
    )  # fmt: skip
    task = asyncio.create_task(responder.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    await asyncio.sleep(0.2)  # let run() start its source before announcing
    _log("ready")
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        dedup.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["rabbitmq", "redis_streams"], default="rabbitmq")
    parser.add_argument("--url", default=None, help="Broker URL (default: the local RabbitMQ or Redis).")
    parser.add_argument("--queue", default="order-status-request", help="Request queue or stream.")
    parser.add_argument("--layout", default=str(HERE / "layouts" / "order_status.cpy"))
    parser.add_argument("--encoding", default="cp037")
    parser.add_argument("--orders", default=str(HERE / "orders.json"))
    parser.add_argument("--state-dir", default=str(HERE / ".raygent"))
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--delivery-limit", type=int, default=5)
    parser.add_argument("--prefetch", type=int, default=16)
    parser.add_argument("--consumer", default=None, help="Redis consumer name (default: random).")
    parser.add_argument("--claim-idle-ms", type=int, default=5000)
    parser.add_argument("--spans", default=None, help="Append spans as JSON lines to this file.")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
