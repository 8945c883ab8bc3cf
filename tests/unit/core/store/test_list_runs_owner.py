"""``list_runs(owner=…)`` on both backends: only the runs an owner started or that act for them, newest
first, up to ``limit`` — also when they are spread thinly among other callers' runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_backends import BACKEND_NAMES, open_backend

from raygent.core.store import Store
from raygent.core.store.base import RunRecord


@pytest.fixture(params=BACKEND_NAMES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    backend = open_backend(request.param, tmp_path)
    yield backend
    await backend.close()


def run(n: int, requester: str, end_user: str, agent: str = "desk") -> RunRecord:
    return RunRecord(
        run_id=f"run-{n:04d}",
        agent=agent,
        session_id="s",
        status="completed",
        input="hi",
        created_at=float(n),
        updated_at=float(n),
        requester=requester,
        end_user=end_user,
    )


async def test_owner_filter_finds_requested_and_acted_for_runs_newest_first(store: Store) -> None:
    # 600 runs of other callers, with alice's few among them (more than one Redis page apart).
    for n in range(600):
        if n in (5, 250, 590):
            record = run(n, "alice", "alice")
        elif n == 400:
            record = run(n, "svc-portal", "alice")  # a service acting for alice
        elif n == 450:
            record = run(n, "alice", "bob", agent="other")
        else:
            record = run(n, f"caller-{n % 7}", f"customer-{n % 11}")
        await store.create_run(record)
    found = await store.list_runs(owner="alice", limit=10)
    assert [r.run_id for r in found] == ["run-0590", "run-0450", "run-0400", "run-0250", "run-0005"]
    assert [r.run_id for r in await store.list_runs(owner="alice", limit=2)] == ["run-0590", "run-0450"]
    assert [r.run_id for r in await store.list_runs(owner="alice", agent="other")] == ["run-0450"]
    assert await store.list_runs(owner="nobody") == []
    assert len(await store.list_runs(limit=50)) == 50  # no owner: every caller's runs
