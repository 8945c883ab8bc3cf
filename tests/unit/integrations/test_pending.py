"""Durable pending-reply records, SQLite and Redis (the same tests against both): first reply wins,
duplicates are counted, any process sees them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raygent.core.store.redis_server import RedisServer
from raygent.integrations.mq.envelope import Envelope
from raygent.integrations.mq.pending import PendingRecord, SQLitePendingReplies
from raygent.integrations.mq.pending_redis import RedisPendingReplies


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis-pending")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """Makes another 'process' on the same records (the same file, or the same Redis namespace)."""
    if request.param == "sqlite":
        return lambda: SQLitePendingReplies(tmp_path / "p.db")
    url = request.getfixturevalue("redis_url")
    namespace = f"{{test:{uuid.uuid4().hex}}}"
    return lambda: RedisPendingReplies(url, namespace=namespace)


def record(cid: str = "c1") -> PendingRecord:
    return PendingRecord(cid, "tool", "call", "run", "pending", 1.0, 100.0)


async def test_register_is_idempotent(opener: Callable[[], Any]) -> None:
    store = opener()
    first, inserted = await store.register(record())
    again, inserted_again = await store.register(record())
    assert inserted and not inserted_again and first == again
    assert [r.correlation_id for r in await store.list_pending()] == ["c1"]


async def test_first_reply_wins_and_duplicates_are_counted_across_instances(
    opener: Callable[[], Any],
) -> None:
    one, two = opener(), opener()
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


async def test_an_expired_call_takes_no_reply(opener: Callable[[], Any]) -> None:
    store = opener()
    await store.register(record())
    await store.expire("c1")
    assert await store.record_reply(Envelope(b"late", "c1", "m"), now=9.0) is None
    stored = await store.get("c1")
    assert stored is not None and stored.state == "expired" and stored.reply is None


async def test_sweep_queries_find_replied_and_overdue_calls_in_their_window(
    opener: Callable[[], Any],
) -> None:
    store = opener()
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
    await store.aclose()


async def test_reply_bodies_stay_bytes(opener: Callable[[], Any]) -> None:
    store = opener()
    await store.register(record("ebcdic"))
    body = "ORDER 1004".encode("cp037") + b"\x00\xff\x0c"  # fixed-width EBCDIC with a packed decimal
    await store.record_reply(Envelope(body, "ebcdic", "m1", headers={"traceparent": "00-ab-cd-01"}), now=2.0)
    stored = await store.get("ebcdic")
    assert stored is not None and stored.reply is not None
    assert stored.reply.body == body and stored.reply.headers == {"traceparent": "00-ab-cd-01"}
    await store.aclose()


def test_a_redis_fleet_keeps_pending_replies_in_redis(tmp_path: Path) -> None:
    from raygent.core.clock import SystemClock
    from raygent.core.config import StoreSpec
    from raygent.core.fleetfile import load_fleet
    from raygent.integrations.executor import build_executors
    from raygent.integrations.mq.tool import MqToolExecutor

    example = Path(__file__).resolve().parents[3] / "examples" / "legacy_mainframe" / "fleet.yaml"
    fleet = load_fleet(example, state_dir=tmp_path)
    local = build_executors(fleet, clock=SystemClock())["lookup_order_async"]
    assert isinstance(local, MqToolExecutor) and isinstance(local.pending, SQLitePendingReplies)
    redis_store = StoreSpec(kind="redis", url="redis://127.0.0.1:6379/0", tenant="acme")
    clustered = build_executors(fleet.model_copy(update={"store": redis_store}), clock=SystemClock())
    pending = clustered["lookup_order_async"]
    assert isinstance(pending, MqToolExecutor) and isinstance(pending.pending, RedisPendingReplies)
    assert pending.pending.namespace.endswith(":lookup_order_async") and "acme" in pending.pending.namespace
    assert isinstance(clustered["lookup_order"], MqToolExecutor) and clustered["lookup_order"].pending is None
