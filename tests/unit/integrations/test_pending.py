"""Durable pending-reply records: first reply wins, duplicates are counted, any process sees them."""

from __future__ import annotations

from pathlib import Path

from raygent.integrations.mq.envelope import Envelope
from raygent.integrations.mq.pending import PendingRecord, SQLitePendingReplies


def record(cid: str = "c1") -> PendingRecord:
    return PendingRecord(cid, "tool", "call", "run", "pending", 1.0, 100.0)


async def test_register_is_idempotent(tmp_path: Path) -> None:
    store = SQLitePendingReplies(tmp_path / "p.db")
    first, inserted = await store.register(record())
    again, inserted_again = await store.register(record())
    assert inserted and not inserted_again and first == again
    assert [r.correlation_id for r in await store.list_pending()] == ["c1"]


async def test_first_reply_wins_and_duplicates_are_counted_across_instances(tmp_path: Path) -> None:
    one, two = SQLitePendingReplies(tmp_path / "p.db"), SQLitePendingReplies(tmp_path / "p.db")
    await one.register(record())
    first = await one.record_reply(Envelope(b"A", "c1", "m1", headers={"h": "1"}), now=5.0)
    second = await two.record_reply(Envelope(b"B", "c1", "m2"), now=6.0)
    stranger = await two.record_reply(Envelope(b"C", "unknown", "m3"), now=6.0)
    assert first is not None and first.state == "replied" and first.reply is not None
    assert first.reply.body == b"A" and first.reply.headers == {"h": "1"}
    assert second is None and stranger is None
    stored = await two.get("c1")
    assert stored is not None and stored.reply is not None
    assert stored.reply.body == b"A" and stored.duplicate_replies == 1 and stored.replied_ts == 5.0
    assert await one.list_pending() == []


async def test_an_expired_call_takes_no_reply(tmp_path: Path) -> None:
    store = SQLitePendingReplies(tmp_path / "p.db")
    await store.register(record())
    await store.expire("c1")
    assert await store.record_reply(Envelope(b"late", "c1", "m"), now=9.0) is None
    stored = await store.get("c1")
    assert stored is not None and stored.state == "expired" and stored.reply is None


async def test_sweep_queries_find_replied_and_overdue_calls_in_their_window(tmp_path: Path) -> None:
    store = SQLitePendingReplies(tmp_path / "p.db")
    for cid, deadline in (("old", 10.0), ("due", 50.0), ("live", 500.0), ("gone", 60.0), ("done", 400.0)):
        await store.register(PendingRecord(cid, "tool", "call", f"run-{cid}", "pending", 1.0, deadline))
    await store.record_reply(Envelope(b"R", "done", "m"), now=90.0)
    await store.expire("gone")
    assert [r.correlation_id for r in await store.list_replied(since_ts=80.0)] == ["done"]
    assert await store.list_replied(since_ts=95.0) == []
    # At t=100 with a window from t=20: "due" is pending past its deadline, "gone" expired, "old" is
    # outside the window, "live" still has time and "done" has its reply.
    overdue = await store.list_overdue(now=100.0, since_ts=20.0)
    assert [(r.correlation_id, r.state) for r in overdue] == [("due", "pending"), ("gone", "expired")]
    store.close()
