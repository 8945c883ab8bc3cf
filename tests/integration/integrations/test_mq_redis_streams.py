"""The MQ bridge over real Redis Streams: consumer groups, acknowledgement, XAUTOCLAIM, dead letters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from legacy_helpers import REDIS_URL, inquiries, legacy_fleet

from raygent.core.clock import SystemClock
from raygent.core.config import MqToolSpec, RedisStreamsTransportSpec
from raygent.integrations.context import ToolContext
from raygent.integrations.errors import RemoteToolError, ToolTimeoutError
from raygent.integrations.mq.bridge import CallMeta
from raygent.integrations.mq.envelope import Envelope, correlation_id_for
from raygent.integrations.mq.tool import MqToolExecutor

pytestmark = pytest.mark.integration


def executor(tmp_path: Path, stream: str, **changes: Any) -> MqToolExecutor:
    fleet = legacy_fleet(tmp_path / "state", queue="unused")
    spec = fleet.tools["lookup_order"]
    assert isinstance(spec, MqToolSpec)
    transport = RedisStreamsTransportSpec(kind="redis_streams", url=REDIS_URL, request_stream=stream)
    return MqToolExecutor(
        "lookup_order",
        spec.model_copy(update={"transport": transport, **changes}),
        base_dir=Path(fleet.base_dir),
        state_dir=tmp_path / "state",
        clock=SystemClock(),
    )


def ctx(key: str, tmp_path: Path) -> ToolContext:
    return ToolContext(key, key, "run-1", "ses-1", "orders", "svc-orders@acme", tmp_path)


async def test_round_trip(tmp_path: Path, redis_stream: str, start_responder: Any) -> None:
    start_responder(redis_stream, transport="redis_streams")
    tool = executor(tmp_path, redis_stream)
    try:
        result = await tool.call(ctx("k1", tmp_path), {"order_id": "1004"}, timeout_s=10)
    finally:
        await tool.aclose()
    assert result["status"] == "delivered" and result["total_usd"] == 88.0
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        # Acknowledged: nothing is left pending in the responders' group.
        assert (await client.xpending(redis_stream, "responders"))["pending"] == 0
    finally:
        await client.aclose()


async def test_no_responder_is_a_clear_timeout(tmp_path: Path, redis_stream: str) -> None:
    tool = executor(tmp_path, redis_stream)
    try:
        with pytest.raises(ToolTimeoutError, match=r"no reply within 0\.3 s"):
            await tool.call(ctx("k1", tmp_path), {"order_id": "1004"}, timeout_s=0.3)
    finally:
        await tool.aclose()


async def test_killed_responder_entry_is_reclaimed_and_the_effect_happens_once(
    tmp_path: Path, redis_stream: str, start_responder: Any
) -> None:
    state = tmp_path / "order-system"
    first = start_responder(redis_stream, transport="redis_streams", state=state, latency_ms=60_000)
    tool = executor(tmp_path, redis_stream)
    cid = correlation_id_for("lookup_order", "k-kill")
    call = asyncio.create_task(tool.call(ctx("k-kill", tmp_path), {"order_id": "1001"}, timeout_s=60))
    try:
        await asyncio.to_thread(first.wait_for, f"committed {cid}")
        first.kill()  # the entry stays pending with the dead consumer
        second = start_responder(redis_stream, transport="redis_streams", state=state, claim_idle_ms=300)
        result = await asyncio.wait_for(call, 60)
    finally:
        call.cancel()
        await tool.aclose()
    assert result["status"] == "shipped"
    assert f"replayed {cid}" in second.text()  # XAUTOCLAIM handed it over; the stored reply answered
    assert inquiries(state, cid) == 1


async def test_resends_are_deduplicated_and_extra_replies_ignored(
    tmp_path: Path, redis_stream: str, start_responder: Any
) -> None:
    state = tmp_path / "order-system"
    start_responder(redis_stream, transport="redis_streams", state=state, latency_ms=1200)
    tool = executor(tmp_path, redis_stream, resend_after_s=0.4, max_sends=2)
    cid = correlation_id_for("lookup_order", "k-dup")
    try:
        result = await tool.call(ctx("k-dup", tmp_path), {"order_id": "1002"}, timeout_s=20)
        for _ in range(200):
            if tool.bridge.stats.replies >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await tool.aclose()
    assert result["status"] == "processing"
    assert tool.bridge.stats.resent == 1
    assert tool.bridge.stats.replies == 2 and tool.bridge.stats.ignored_replies == 1
    assert inquiries(state, cid) == 1


async def test_poison_entry_goes_to_the_dead_letter_stream(
    tmp_path: Path, redis_stream: str, start_responder: Any
) -> None:
    start_responder(redis_stream, transport="redis_streams")
    tool = executor(tmp_path, redis_stream)
    try:
        await tool.bridge.start()
        with pytest.raises(RemoteToolError, match="malformed ORDER-STATUS-REQUEST"):
            await tool.bridge.call(
                Envelope(b"\x00\x01garbage", "poison-r", "poison-r"),
                meta=CallMeta("lookup_order", "c", "r"),
                timeout_s=10,
            )
    finally:
        await tool.aclose()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        entries = await client.xrange(f"{redis_stream}:dlq")
        assert (await client.xpending(redis_stream, "responders"))["pending"] == 0
    finally:
        await client.aclose()
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"body"] == b"\x00\x01garbage" and b"record is 9 bytes" in fields[b"reason"]
