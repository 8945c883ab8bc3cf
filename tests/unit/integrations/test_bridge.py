"""The bridge's request/reply logic over an in-process transport (a real Transport implementation with
a scripted responder, the httpx MockTransport kind of seam): resends, duplicates, timeouts, async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from raygent.core.clock import SystemClock
from raygent.integrations.errors import RemoteToolError, ToolPendingError, ToolTimeoutError
from raygent.integrations.mq.bridge import CallMeta, MqBridge
from raygent.integrations.mq.envelope import HEADER_ERROR, HEADER_STATUS, Envelope, ReplyHandler
from raygent.integrations.mq.pending import PendingRecord, SQLitePendingReplies

META = CallMeta("tool", "call-1", "run-1")


class LoopbackTransport:
    """Requests go to ``answer``, which decides what replies (if any) come back and when."""

    def __init__(self, answer: Callable[[Envelope, int], list[tuple[float, Envelope]]]) -> None:
        self.answer = answer
        self.published: list[Envelope] = []
        self.on_reply: ReplyHandler | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def reply_to(self) -> str:
        return "loopback.reply"

    async def start(self, on_reply: ReplyHandler) -> None:
        self.on_reply = on_reply

    async def publish(self, request: Envelope) -> None:
        self.published.append(request)
        for delay, reply in self.answer(request, len(self.published)):
            task = asyncio.create_task(self._deliver(delay, reply))
            self.tasks.add(task)

    async def _deliver(self, delay: float, reply: Envelope) -> None:
        await asyncio.sleep(delay)
        assert self.on_reply is not None
        await self.on_reply(reply)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()


def reply_to(request: Envelope, body: bytes = b"ok", **headers: str) -> Envelope:
    return Envelope(body, request.correlation_id, f"r-{len(body)}", headers={HEADER_STATUS: "ok", **headers})


REQUEST = Envelope(b"req", "cid-1", "cid-1")


async def test_reply_is_paired_by_correlation_id_and_stray_replies_ignored() -> None:
    transport = LoopbackTransport(
        lambda req, n: [(0.0, Envelope(b"other", "cid-x", "m")), (0.01, reply_to(req, b"mine"))]
    )
    bridge = MqBridge(transport, clock=SystemClock())
    reply = await bridge.call(REQUEST, meta=META, timeout_s=2)
    assert reply.body == b"mine"
    assert transport.published[0].reply_to == "loopback.reply"
    assert bridge.stats.ignored_replies == 1


async def test_resends_keep_the_message_id_until_a_reply_comes() -> None:
    transport = LoopbackTransport(lambda req, n: [(0.0, reply_to(req))] if n == 3 else [])
    bridge = MqBridge(transport, clock=SystemClock())
    reply = await bridge.call(REQUEST, meta=META, timeout_s=5, resend_after_s=0.05, max_sends=3)
    assert reply.body == b"ok"
    assert [e.message_id for e in transport.published] == ["cid-1"] * 3
    assert bridge.stats.resent == 2


async def test_no_reply_is_a_timeout_and_late_replies_are_ignored() -> None:
    transport = LoopbackTransport(lambda req, n: [(0.3, reply_to(req))])
    bridge = MqBridge(transport, clock=SystemClock())
    with pytest.raises(ToolTimeoutError, match=r"no reply within 0\.1 s"):
        await bridge.call(REQUEST, meta=META, timeout_s=0.1)
    await asyncio.sleep(0.35)
    assert bridge.stats.ignored_replies == 1


async def test_error_reply_is_a_clear_remote_error() -> None:
    error = {HEADER_STATUS: "error", HEADER_ERROR: "malformed record"}
    transport = LoopbackTransport(lambda req, n: [(0.0, reply_to(req, b"x", **error))])
    with pytest.raises(RemoteToolError, match="the backend rejected the request: malformed record"):
        await MqBridge(transport, clock=SystemClock()).call(REQUEST, meta=META, timeout_s=1)


async def test_async_call_goes_pending_then_the_recorded_reply_answers_a_repeat(tmp_path: Path) -> None:
    transport = LoopbackTransport(
        lambda req, n: [(0.2, reply_to(req, b"late")), (0.25, reply_to(req, b"dup"))]
    )
    pending = SQLitePendingReplies(tmp_path / "p.db")
    bridge = MqBridge(transport, clock=SystemClock(), pending=pending)
    seen: list[PendingRecord] = []

    async def listener(record: PendingRecord) -> None:
        seen.append(record)

    bridge.add_listener(listener)
    with pytest.raises(ToolPendingError) as info:
        await bridge.call(REQUEST, meta=META, timeout_s=60, async_after_s=0.05)
    assert info.value.extra == {"correlation_id": "cid-1"}
    await asyncio.sleep(0.35)
    assert [r.reply.body for r in seen if r.reply is not None] == [b"late"]  # the duplicate is not news
    again = await bridge.call(REQUEST, meta=META, timeout_s=60, async_after_s=0.05)
    assert again.body == b"late" and len(transport.published) == 1
    stored = await pending.get("cid-1")
    assert stored is not None and stored.duplicate_replies == 1


async def test_wait_picks_up_a_reply_recorded_by_another_process(tmp_path: Path) -> None:
    transport = LoopbackTransport(lambda req, n: [])
    mine = SQLitePendingReplies(tmp_path / "p.db")
    bridge = MqBridge(transport, clock=SystemClock(), pending=mine, poll_s=0.02)
    with pytest.raises(ToolPendingError):
        await bridge.call(REQUEST, meta=META, timeout_s=60, async_after_s=0.02)
    other_replica = SQLitePendingReplies(tmp_path / "p.db")
    waiting = asyncio.create_task(bridge.wait("cid-1", timeout_s=5))
    await asyncio.sleep(0.05)
    await other_replica.record_reply(Envelope(b"via-store", "cid-1", "m"), now=1.0)
    assert (await waiting).body == b"via-store"
