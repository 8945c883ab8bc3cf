"""Session owners on SQLite and Redis: the first claim wins, atomically, across 'processes'."""

from __future__ import annotations

import asyncio
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest

from raygent.core.store.sessionowners import RedisSessionOwners, SQLiteSessionOwners


@pytest.fixture(params=["sqlite", "redis"])
def owners(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        return lambda: SQLiteSessionOwners(tmp_path / "serving.db")
    url = request.getfixturevalue("redis_url")
    namespace = f"{{test:{uuid.uuid4().hex}}}"
    return lambda: RedisSessionOwners(url, namespace=namespace, ttl_s=60)


async def test_the_first_claim_wins_and_later_claims_see_it(owners: Any) -> None:
    ledgers = [owners() for _ in range(4)]  # as if four processes
    holders = await asyncio.gather(
        *(ledgers[i % 4].claim("ses-1", f"customer-{i}", now=1.0) for i in range(16))
    )
    assert len(set(holders)) == 1 and holders[0].startswith("customer-")
    assert await ledgers[0].claim("ses-1", "someone-else", now=2.0) == holders[0]
    assert await ledgers[1].claim("ses-2", "C106", now=2.0) == "C106"
    copy = pickle.loads(pickle.dumps(ledgers[2]))
    assert await copy.claim("ses-2", "C105", now=3.0) == "C106"
    for ledger in (*ledgers, copy):
        await ledger.close()
