"""The MQ bridge against the real RabbitMQ and the example's legacy responder process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from legacy_helpers import RABBIT_URL, inquiries, legacy_fleet

from raygent.core.clock import SystemClock
from raygent.core.config import MqToolSpec, RabbitMqTransportSpec
from raygent.integrations.context import ToolContext
from raygent.integrations.errors import RemoteToolError, ToolTimeoutError
from raygent.integrations.mq.bridge import CallMeta
from raygent.integrations.mq.envelope import Envelope, correlation_id_for
from raygent.integrations.mq.rabbitmq import RabbitMqRequestSource
from raygent.integrations.mq.responder import Responder, SQLiteDedup
from raygent.integrations.mq.tool import MqToolExecutor

pytestmark = pytest.mark.integration


def executor(tmp_path: Path, queue: str, **changes: Any) -> MqToolExecutor:
    fleet = legacy_fleet(tmp_path / "state", queue=queue)
    spec = fleet.tools["lookup_order"]
    assert isinstance(spec, MqToolSpec)
    return MqToolExecutor(
        "lookup_order",
        spec.model_copy(update=changes),
        base_dir=Path(fleet.base_dir),
        state_dir=tmp_path / "state",
        clock=SystemClock(),
    )


def ctx(key: str, tmp_path: Path, traceparent: str | None = None) -> ToolContext:
    return ToolContext(
        key, key, "run-1", "ses-1", "orders", "svc-orders@acme", tmp_path, traceparent=traceparent
    )


async def test_round_trip_through_fixed_width_records(
    tmp_path: Path, rabbit_queue: str, start_responder: Any
) -> None:
    start_responder(rabbit_queue)
    tool = executor(tmp_path, rabbit_queue)
    try:
        found = await tool.call(ctx("k1", tmp_path), {"order_id": "1003"}, timeout_s=10)
        missing = await tool.call(ctx("k2", tmp_path), {"order_id": "4242"}, timeout_s=10)
    finally:
        await tool.aclose()
    assert found == {
        "order_id": 1003,
        "found": "Y",
        "status": "cancelled",
        "item": "desk lamp",
        "customer_id": "C104",
        "total_usd": 396.36,
        "balance_due_usd": -396.36,  # a signed zoned decimal, negative
        "detail": "Cancelled; refund owed to the customer.",
    }
    assert missing["found"] == "N" and missing["order_id"] == 4242


async def test_no_reply_in_time_is_a_clear_timeout(tmp_path: Path, rabbit_queue: str) -> None:
    tool = executor(tmp_path, rabbit_queue, resend_after_s=None)
    try:
        with pytest.raises(ToolTimeoutError, match=r"no reply within 0.3 s"):
            await tool.call(ctx("k1", tmp_path), {"order_id": "1001"}, timeout_s=0.3)
    finally:
        await tool.aclose()


async def test_responder_killed_before_ack_redelivers_and_the_effect_happens_once(
    tmp_path: Path, rabbit_queue: str, start_responder: Any
) -> None:
    state = tmp_path / "order-system"
    first = start_responder(rabbit_queue, state=state, latency_ms=60_000)
    tool = executor(tmp_path, rabbit_queue, resend_after_s=None)
    cid = correlation_id_for("lookup_order", "k-kill")
    call = asyncio.create_task(tool.call(ctx("k-kill", tmp_path), {"order_id": "1001"}, timeout_s=60))
    try:
        await asyncio.to_thread(first.wait_for, f"committed {cid}")
        first.kill()  # SIGKILL after the effect was committed, before the reply and the ack
        second = start_responder(rabbit_queue, state=state)
        result = await asyncio.wait_for(call, 60)
    finally:
        call.cancel()
        await tool.aclose()
    assert result["status"] == "shipped"
    assert f"replayed {cid}" in second.text()  # the broker redelivered it; the stored reply answered
    assert inquiries(state, cid) == 1


async def test_resent_requests_are_deduplicated_and_extra_replies_ignored(
    tmp_path: Path, rabbit_queue: str, start_responder: Any
) -> None:
    state = tmp_path / "order-system"
    responder = start_responder(rabbit_queue, state=state, latency_ms=1500)
    tool = executor(tmp_path, rabbit_queue, resend_after_s=0.4, max_sends=3)
    cid = correlation_id_for("lookup_order", "k-dup")
    try:
        result = await tool.call(ctx("k-dup", tmp_path), {"order_id": "1002"}, timeout_s=20)
        # The two resends are answered too (from the dedup record); wait until those replies arrived.
        for _ in range(200):
            if tool.bridge.stats.replies >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await tool.aclose()
    assert result["status"] == "processing"
    assert tool.bridge.stats.sent == 1 and tool.bridge.stats.resent == 2
    assert tool.bridge.stats.replies == 3 and tool.bridge.stats.ignored_replies == 2
    assert responder.text().count(f"replayed {cid}") == 2
    assert inquiries(state, cid) == 1


async def dlq_bodies(queue: str) -> list[bytes]:
    connection = await aio_pika.connect_robust(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(f"{queue}.dlq", durable=True, arguments={"x-queue-type": "quorum"})
        bodies = []
        while (message := await dlq.get(fail=False, timeout=5)) is not None:
            bodies.append(message.body)
            await message.ack()
        return bodies


async def test_malformed_request_is_answered_with_an_error_and_dead_lettered(
    tmp_path: Path, rabbit_queue: str, start_responder: Any
) -> None:
    start_responder(rabbit_queue)
    tool = executor(tmp_path, rabbit_queue)
    garbage = b"OSRQ12AB"  # too short, and not digits where ORDER-ID sits
    try:
        await tool.bridge.start()
        with pytest.raises(RemoteToolError, match=r"malformed ORDER-STATUS-REQUEST: record is 8 bytes"):
            await tool.bridge.call(
                Envelope(garbage, "poison-1", "poison-1"),
                meta=CallMeta("lookup_order", "c", "r"),
                timeout_s=10,
            )
    finally:
        await tool.aclose()
    assert await dlq_bodies(rabbit_queue) == [garbage]


async def test_a_request_that_keeps_failing_is_dead_lettered_by_the_delivery_limit(
    tmp_path: Path, rabbit_queue: str
) -> None:
    spec = RabbitMqTransportSpec(
        kind="rabbitmq", url=RABBIT_URL, request_queue=rabbit_queue, delivery_limit=2
    )
    attempts: list[str] = []

    def crashing(envelope: Envelope, conn: Any) -> bytes:
        attempts.append(envelope.message_id)
        raise RuntimeError("the transaction abends")  # not poison by itself: retried until the limit

    # A limit above the broker's, so the broker's x-delivery-limit is what dead-letters it.
    responder = Responder(
        RabbitMqRequestSource(spec), crashing, dedup=SQLiteDedup(tmp_path / "d.db"), delivery_limit=99
    )
    serving = asyncio.create_task(responder.run())
    connection = await aio_pika.connect_robust(RABBIT_URL)
    try:
        await asyncio.sleep(0.5)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(
                    b"ABEND", message_id="abend-1", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                routing_key=rabbit_queue,
            )
        for _ in range(200):
            if len(attempts) >= 3:
                break
            await asyncio.sleep(0.05)
        bodies = await dlq_bodies(rabbit_queue)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    assert bodies == [b"ABEND"]
    assert attempts == ["abend-1"] * 3  # first delivery + 2 redeliveries, then the broker dead-lettered it


async def test_traceparent_rides_in_the_message_headers(
    tmp_path: Path, rabbit_queue: str, start_responder: Any
) -> None:
    spans_file = tmp_path / "responder-spans.jsonl"
    start_responder(rabbit_queue, spans=spans_file)
    tool = executor(tmp_path, rabbit_queue)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    try:
        await tool.call(ctx("k-trace", tmp_path, traceparent), {"order_id": "1001"}, timeout_s=10)
    finally:
        await tool.aclose()
    for _ in range(100):
        if spans_file.exists() and spans_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    span = json.loads(spans_file.read_text().splitlines()[0])
    assert span["name"] == f"process {rabbit_queue}" and span["kind"] == "CONSUMER"
    assert span["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert span["parent_span_id"] == "b7ad6b7169203331"
