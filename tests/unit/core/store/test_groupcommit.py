"""Group commit of audit appends on the SQLite store: fewer transactions, same chain, isolated failures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditDraft, AuditQuery, AuditRecord


def drafts(run: str, n: int = 2, kind: Any = "prompt") -> list[AuditDraft]:
    return [AuditDraft(1.0, kind, run, "s", "a", "svc-a", {"n": i}) for i in range(n)]


class Counting:
    """Counts the store's real transactions (calls of the un-grouped append)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.calls: list[int] = []
        self._inner = store._append_now

        async def append(ds: list[AuditDraft]) -> list[AuditRecord]:
            self.calls.append(len(ds))
            return await self._inner(ds)

        store._group._append = append


async def test_concurrent_appends_share_transactions_and_each_gets_its_own_records(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    counting = Counting(store)
    results = await asyncio.gather(*(store.append_audit(drafts(f"run{i}", 3)) for i in range(60)))
    assert sum(counting.calls) == 180 and len(counting.calls) < 60  # coalesced
    for i, records in enumerate(results):
        assert [(r.run_id, r.payload["n"]) for r in records] == [
            (f"run{i}", 0),
            (f"run{i}", 1),
            (f"run{i}", 2),
        ]
        assert [r.seq for r in records] == list(range(records[0].seq, records[0].seq + 3))  # contiguous
    verified = await store.verify_audit()
    assert verified.ok and verified.records_checked == 180
    await store.close()


async def test_a_bad_call_fails_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    calls = [store.append_audit(drafts(f"ok{i}")) for i in range(10)]
    calls.insert(5, store.append_audit(drafts("bad", kind="not-a-kind")))
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], ValueError) and "not-a-kind" in str(errors[0])
    stored = await store.query_audit(AuditQuery(limit=100))
    assert sorted({r.run_id for r in stored}) == sorted(f"ok{i}" for i in range(10))
    assert (await store.verify_audit()).ok
    await store.close()


async def test_a_cancelled_caller_does_not_cancel_the_others(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    tasks = [asyncio.create_task(store.append_audit(drafts(f"run{i}"))) for i in range(20)]
    await asyncio.sleep(0)
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert all(isinstance(r, list) and len(r) == 2 for i, r in enumerate(results) if i != 3)
    # The cancelled caller's records were committed with the others (it just did not wait for them).
    stored = await store.query_audit(AuditQuery(limit=100))
    assert {r.run_id for r in stored} == {f"run{i}" for i in range(20)}
    await store.close()


def test_one_store_across_event_loops(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    for loop_run in range(3):
        records = asyncio.run(store.append_audit(drafts(f"loop{loop_run}")))
        assert [r.run_id for r in records] == [f"loop{loop_run}"] * 2
    assert asyncio.run(store.verify_audit()).records_checked == 6
    asyncio.run(store.close())


@pytest.mark.parametrize("max_drafts", [1, 4])
async def test_batches_respect_the_size_bound(tmp_path: Path, max_drafts: int) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store._group._max = max_drafts
    counting = Counting(store)
    await asyncio.gather(*(store.append_audit(drafts(f"run{i}", 2)) for i in range(10)))
    # A call is never split; a batch holds more than one call only while it fits the bound.
    assert all(n <= max(max_drafts, 2) for n in counting.calls) and sum(counting.calls) == 20
    await store.close()
