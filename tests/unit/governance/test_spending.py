"""Per-agent per-day spending: atomic reservations, never past the cap, even under concurrency; on
SQLite and on PostgreSQL (``open_gov_db`` runs each test on both)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from govkit import MovableClock

from raygent.governance.spending import SpendingLedger
from raygent.governance.state import GovernanceState


async def test_the_cap_holds_under_concurrent_reservations(
    open_gov_db: Callable[[], GovernanceState], clock: MovableClock
) -> None:
    ledger = SpendingLedger(open_gov_db(), clock)
    # Two handles on one state stand for two gateway replicas (on PostgreSQL: on two machines).
    other = SpendingLedger(open_gov_db(), clock)
    results = await asyncio.gather(
        *(
            (ledger if i % 2 else other).reserve(
                agent="refunds", tool="issue_refund", call_key=f"k{i}", amount_usd=150.0, limit_usd=1000.0
            )
            for i in range(20)
        )
    )
    assert sum(r.ok for r in results) == 6  # 6 x 150 = 900; a 7th would be 1050
    assert await ledger.spent_today("refunds", "issue_refund") == 900.0


async def test_release_commit_retry_and_new_day(
    open_gov_db: Callable[[], GovernanceState], clock: MovableClock
) -> None:
    ledger = SpendingLedger(open_gov_db(), clock)
    ok = await ledger.reserve(agent="a", tool="t", call_key="k1", amount_usd=600, limit_usd=1000)
    assert ok.ok
    # The same call again (a retry) reserves once.
    assert (await ledger.reserve(agent="a", tool="t", call_key="k1", amount_usd=600, limit_usd=1000)).ok
    assert await ledger.spent_today("a", "t") == 600
    assert not (await ledger.reserve(agent="a", tool="t", call_key="k2", amount_usd=500, limit_usd=1000)).ok
    await ledger.settle("k1", committed=False)  # the tool failed: the money was not moved
    assert (await ledger.reserve(agent="a", tool="t", call_key="k2", amount_usd=500, limit_usd=1000)).ok
    # Exactly at the cap is allowed; one cent more is not.
    assert (await ledger.reserve(agent="a", tool="t", call_key="k3", amount_usd=500, limit_usd=1000)).ok
    assert not (await ledger.reserve(agent="a", tool="t", call_key="k4", amount_usd=0.01, limit_usd=1000)).ok
    clock.offset_s = 86_400
    assert (await ledger.reserve(agent="a", tool="t", call_key="k4", amount_usd=999, limit_usd=1000)).ok
