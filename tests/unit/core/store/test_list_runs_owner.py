"""``list_runs(owner=…)`` on both backends: only the runs an owner started or that act for them, newest
first, up to ``limit`` — also when they are spread thinly among other callers' runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_backends import BACKEND_NAMES, open_backend

from raygent.core.errors import ValidationFailedError
from raygent.core.store import Store
from raygent.core.store.base import RunRecord
from raygent.core.store.redis import RedisStore


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


async def test_pages_follow_on_from_the_last_run_of_the_previous_page(store: Store) -> None:
    for n in range(25):
        await store.create_run(run(n, f"caller-{n % 3}", "c", agent="desk" if n % 5 else "other"))
    first = await store.list_runs(limit=10)
    assert [r.run_id for r in first] == [f"run-{n:04d}" for n in range(24, 14, -1)]
    # Runs created since the first page do not shift the next one.
    for n in range(100, 103):
        await store.create_run(run(n, "caller-0", "c"))
    seen = [r.run_id for r in first]
    cursor = first[-1].run_id
    while True:
        page = await store.list_runs(limit=10, before=cursor)
        seen += [r.run_id for r in page]
        if len(page) < 10:
            break
        cursor = page[-1].run_id
    assert seen == [f"run-{n:04d}" for n in range(24, -1, -1)]

    desk = await store.list_runs(agent="desk", limit=4, before="run-0021")
    assert [r.run_id for r in desk] == ["run-0019", "run-0018", "run-0017", "run-0016"]
    mine = await store.list_runs(owner="caller-0", limit=3, before="run-0018")
    assert [r.run_id for r in mine] == ["run-0015", "run-0012", "run-0009"]
    with pytest.raises(ValidationFailedError, match="not a run of this listing"):
        await store.list_runs(before="run-9999")
    with pytest.raises(ValidationFailedError):
        await store.list_runs(agent="desk", before="run-0020")  # an "other" run: not in this listing


async def test_a_redis_run_stored_without_its_index_member_still_pages(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    request.getfixturevalue("redis_url")
    store = open_backend("redis", tmp_path)
    assert isinstance(store, RedisStore)
    try:
        for n in range(5):
            await store.create_run(run(n, "a", "a"))
        await store._r.hdel(store._key("r", "run-0003"), "z")  # as written before runs kept it
        assert [r.run_id for r in await store.list_runs(before="run-0003")] == [
            "run-0002",
            "run-0001",
            "run-0000",
        ]
    finally:
        await store.close()
