"""The budget ledger on real SQLite and a real Redis: atomic reserve → commit/refund, no overspend.

Acceptance: 200 concurrent requests against a budget that admits 50 → exactly 50 admitted and the
spend stays within the budget, on both backends. The SQLite case spreads the requests over several
ledger instances (separate connections, separate threads), so SQLite's own locking is what is tested.
"""

from __future__ import annotations

import asyncio
import pickle
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from raygent.core.budget import BudgetLedger, Limit, SQLiteLedger
from raygent.core.budget.redis import RedisLedger
from raygent.core.errors import BudgetExceededError, ConflictError

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", "redis"])
async def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[BudgetLedger]]:
    """Four ledger instances on one backend (four connections / clients)."""
    clock = Clock()
    made: list[BudgetLedger]
    if request.param == "sqlite":
        made = [SQLiteLedger(tmp_path / "budgets.db", clock=clock) for _ in range(4)]
    else:
        try:
            redis.Redis.from_url(REDIS_URL).ping()
        except redis.RedisError as exc:  # the CI machine runs Redis; a bare laptop may not
            pytest.fail(f"Redis at {REDIS_URL} is required: {exc}")
        prefix = f"raygent-test-{uuid.uuid4().hex[:8]}"
        made = [RedisLedger(REDIS_URL, key_prefix=prefix, clock=clock) for _ in range(4)]
    made[0].clock_for_test = clock  # type: ignore[attr-defined]
    yield made
    for ledger in made:
        await ledger.close()


async def test_200_concurrent_requests_against_a_budget_for_50(ledgers: list[BudgetLedger]) -> None:
    scope = Limit("session:s-1", max_tokens=50 * 1000, max_usd=50 * 0.01)
    tenant = Limit("tenant:acme", max_usd=100.0)  # roomy second scope: must not change the outcome

    async def request(i: int) -> bool:
        ledger = ledgers[i % len(ledgers)]
        try:
            await ledger.reserve(f"r-{i}", [scope, tenant], tokens=1000, usd=0.01)
        except BudgetExceededError:
            return False
        await asyncio.sleep(0)  # the model call happens here
        # Calls settle at their full reservation, so room never frees up mid-test: exactly 50 fit.
        await ledger.commit(f"r-{i}", tokens=1000, usd=0.01)
        return True

    admitted = await asyncio.gather(*(request(i) for i in range(200)))
    assert sum(admitted) == 50
    spend = await ledgers[0].spend("session:s-1")
    assert spend.reserved_tokens == 0 and spend.reserved_usd == 0
    assert spend.spent_tokens == 50 * 1000  # spent == budget, never more
    assert spend.spent_usd == pytest.approx(0.5) and spend.spent_usd <= 0.5 + 1e-12
    assert (await ledgers[0].spend("tenant:acme")).spent_usd == pytest.approx(spend.spent_usd)


async def test_refusal_names_the_full_scope_and_changes_nothing(ledgers: list[BudgetLedger]) -> None:
    ledger = ledgers[0]
    small = Limit("agent:orders", max_tokens=100)
    big = Limit("session:s-9", max_tokens=10_000)
    await ledger.reserve("a", [big, small], tokens=80, usd=0)
    with pytest.raises(BudgetExceededError) as caught:
        await ledger.reserve("b", [big, small], tokens=30, usd=0)
    error = caught.value
    assert error.status == 429 and error.retryable is False
    assert error.extra["scope"] == "agent:orders"
    assert pickle.loads(pickle.dumps(error)).extra == error.extra
    assert (await ledger.spend("session:s-9")).reserved_tokens == 80  # b reserved nothing anywhere
    with pytest.raises(ConflictError):
        await ledger.reserve("a", [big], tokens=1, usd=0)


async def test_refund_and_commit_release_the_reservation(ledgers: list[BudgetLedger]) -> None:
    ledger = ledgers[0]
    limit = Limit("session:x", max_tokens=100, max_usd=1.0)
    await ledger.reserve("one", [limit], tokens=100, usd=1.0)
    with pytest.raises(BudgetExceededError):
        await ledger.reserve("two", [limit], tokens=1, usd=0)
    await ledger.refund("one")
    await ledger.refund("one")  # settling twice is a no-op
    await ledger.reserve("two", [limit], tokens=100, usd=0.5)
    await ledger.commit("two", tokens=40, usd=0.2)
    spend = await ledger.spend("session:x")
    assert (spend.spent_tokens, spend.reserved_tokens) == (40, 0)
    assert spend.spent_usd == pytest.approx(0.2)
    with pytest.raises(BudgetExceededError) as caught:
        await ledger.reserve("three", [limit], tokens=10, usd=0.9)
    assert caught.value.extra["unit"] == "USD"


async def test_an_abandoned_reservation_expires(ledgers: list[BudgetLedger]) -> None:
    ledger = ledgers[0]
    clock: Clock = ledger.clock_for_test  # type: ignore[attr-defined]
    limit = Limit("session:y", max_tokens=10)
    await ledger.reserve("lost", [limit], tokens=10, usd=0)
    with pytest.raises(BudgetExceededError):
        await ledger.reserve("next", [limit], tokens=10, usd=0)
    clock.t += 301  # past the 300 s reservation TTL: the next reservation reclaims it
    await ledger.reserve("next", [limit], tokens=10, usd=0)
    assert (await ledger.spend("session:y")).reserved_tokens == 10


def test_ledgers_pickle_to_a_working_copy(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "b.db")
    copy = pickle.loads(pickle.dumps(ledger))
    assert isinstance(copy, SQLiteLedger) and copy.path == ledger.path
