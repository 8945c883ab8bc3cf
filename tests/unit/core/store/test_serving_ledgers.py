"""The idempotency and async-run ledgers, SQLite and Redis (the same tests against both): atomic
reservations, leases, cancel flags, pickling."""

from __future__ import annotations

import asyncio
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from raygent.core.errors import ConflictError
from raygent.core.store.asyncruns import AsyncRunEntry, AsyncRunLedger, SQLiteAsyncRunLedger
from raygent.core.store.idempotency import IdempotencyEntry, IdempotencyLedger, SQLiteIdempotencyLedger
from raygent.core.store.redis_ledgers import RedisAsyncRunLedger, RedisIdempotencyLedger

Factory = Callable[[], Any]


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Factory, Factory]:
    """Makers of an idempotency ledger and an async-run ledger; every call is another 'process' on the
    same ledger (the same file, or the same Redis namespace)."""
    if request.param == "sqlite":
        return (
            lambda: SQLiteIdempotencyLedger(tmp_path / "l.db"),
            lambda: SQLiteAsyncRunLedger(tmp_path / "l.db"),
        )
    url = request.getfixturevalue("redis_url")
    namespace = f"{{test:{uuid.uuid4().hex}}}"
    return (
        lambda: RedisIdempotencyLedger(url, namespace=namespace),
        lambda: RedisAsyncRunLedger(url, namespace=namespace),
    )


def key_entry(run_id: str, *, fp: str = "fp", now: float = 100.0) -> IdempotencyEntry:
    return IdempotencyEntry("scope", "key", fp, run_id, "in_progress", now, now + 10)


async def test_only_one_concurrent_reservation_wins(backend: tuple[Factory, Factory]) -> None:
    ledgers: list[IdempotencyLedger] = [backend[0]() for _ in range(4)]  # as if 4 processes
    results = await asyncio.gather(
        *(ledgers[i % 4].reserve(key_entry(f"run_{i}"), now=100.0) for i in range(16))
    )
    winners = {entry.run_id for reserved, entry in results if reserved}
    assert len(winners) == 1
    assert {entry.run_id for _, entry in results} == winners  # the losers see the winner
    for ledger in ledgers:
        await ledger.close()


async def test_complete_release_get_and_expiry(backend: tuple[Factory, Factory]) -> None:
    ledger: IdempotencyLedger = backend[0]()
    await ledger.reserve(key_entry("run_1"), now=100.0)
    await ledger.complete("scope", "key", "run_other", status=200, body={}, headers={})  # not the owner
    got = await ledger.get("scope", "key", now=101.0)
    assert got is not None and got.state == "in_progress"
    await ledger.complete("scope", "key", "run_1", status=201, body={"a": 1}, headers={"Location": "/x"})
    got = await ledger.get("scope", "key", now=101.0)
    assert got is not None and (got.state, got.status, got.body, got.headers) == (
        "done",
        201,
        {"a": 1},
        {"Location": "/x"},
    )
    assert await ledger.get("scope", "key", now=111.0) is None  # expired
    await ledger.release("scope", "key", "run_1")
    assert await ledger.get("scope", "key", now=101.0) is None
    copy = pickle.loads(pickle.dumps(ledger))
    assert (await copy.reserve(key_entry("run_2"), now=100.0))[0]
    await copy.close()
    await ledger.close()


def entry(run_id: str, **fields: object) -> AsyncRunEntry:
    base = {
        "agent": "a",
        "session_id": "s",
        "input": "x",
        "priority": "batch",
        "accepted_at": 1.0,
        "deadline_ts": 99.0,
    }
    return AsyncRunEntry(run_id=run_id, **{**base, **fields})  # type: ignore[arg-type]


async def test_leases_claims_and_cancel_flags(backend: tuple[Factory, Factory]) -> None:
    ledger: AsyncRunLedger = backend[1]()
    await ledger.add(entry("r1", owner="A", lease_until=50.0))
    with pytest.raises(ConflictError):
        await ledger.add(entry("r1"))
    assert await ledger.claim("r1", "B", now=40.0, lease_s=10) is None  # A's lease holds
    assert await ledger.expired(now=40.0, limit=10) == []
    assert [e.run_id for e in await ledger.expired(now=60.0, limit=10)] == ["r1"]
    claimed = await ledger.claim("r1", "B", now=60.0, lease_s=10)
    assert claimed is not None and claimed.owner == "B" and claimed.lease_until == 70.0
    stale = entry("r1", owner="A", state="dispatched")
    assert not await ledger.save(stale, owner="A")  # A lost the lease
    flagged = await ledger.request_cancel("r1")
    assert flagged is not None and flagged.cancel_requested
    assert await ledger.renew("B", ["r1", "unknown"], lease_until=80.0) == ["r1"]
    claimed.state, claimed.outcome = "finished", {"status": "cancelled"}
    assert await ledger.save(claimed, owner="B")
    got = await ledger.get("r1")
    assert got is not None and got.cancel_requested  # a save never drops a cancel request
    assert not got.open and await ledger.expired(now=1e9, limit=10) == []
    assert await ledger.request_cancel("nope") is None
    await ledger.close()


async def test_one_of_many_racing_claimers_takes_an_expired_lease(backend: tuple[Factory, Factory]) -> None:
    ledgers: list[AsyncRunLedger] = [backend[1]() for _ in range(4)]
    await ledgers[0].add(entry("r1", owner="dead", lease_until=10.0))
    claims = await asyncio.gather(
        *(ledgers[i % 4].claim("r1", f"owner-{i}", now=20.0, lease_s=30) for i in range(12))
    )
    winners = [c.owner for c in claims if c is not None]
    assert len(winners) == 1
    got = await ledgers[3].get("r1")
    assert got is not None and got.owner == winners[0] and got.lease_until == 50.0
    for ledger in ledgers:
        await ledger.close()


async def test_documents_round_trip_exactly_and_expired_is_oldest_first(
    backend: tuple[Factory, Factory],
) -> None:
    ledger: AsyncRunLedger = backend[1]()
    odd = entry(
        "r:odd",
        accepted_at=5.0,
        callback_url="https://hooks.example.com/x?a=1",
        requester="alice",
        end_user="C107",
        outcome={"steps": [], "usage": {}, "error": None, "nested": [[], {}]},
        deliveries=[{"attempt": 1, "status_code": 500}],
        delivery="pending",
        state="finished",
    )
    await ledger.add(odd)
    for n, accepted in enumerate((3.0, 1.0, 4.0)):
        await ledger.add(entry(f"r{n}", accepted_at=accepted))
    got = await ledger.get("r:odd")
    assert got == odd  # empty lists and dicts stay what they were
    due = await ledger.expired(now=100.0, limit=3)
    assert [e.run_id for e in due] == ["r1", "r0", "r2"]  # by acceptance, at most `limit`
    copy = pickle.loads(pickle.dumps(ledger))
    assert await copy.get("r:odd") == odd
    await copy.close()
    await ledger.close()
