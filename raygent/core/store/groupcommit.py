"""Group commit of audit appends: concurrent appends of one process share one transaction.

Every run writes several audit records, each an append to the one hash chain under the store's write
lock. Under concurrency the appends of a process queue for that lock one by one; coalescing the ones
that arrive while a transaction is in flight into the next transaction keeps the number of lock
acquisitions (and commits) per second flat as load grows. A caller still returns only once its own
records are committed, so nothing is acknowledged before it is durable, and records of one call stay
contiguous and in order.

A failure of a shared transaction is not allowed to spread: the batch is retried one call at a time,
so each caller gets its own outcome (the failing call its error, the others their records).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from raygent.core.store.base import AuditDraft, AuditRecord

__all__ = ["GroupCommit"]

Append = Callable[[list[AuditDraft]], Awaitable[list[AuditRecord]]]
_Pending = tuple[list[AuditDraft], "asyncio.Future[list[AuditRecord]]"]


@dataclass
class _LoopState:
    queue: list[_Pending] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    busy: bool = False  # a transaction of this loop is in flight (inline or in the drain task)


class GroupCommit:
    """Wraps a store's ``append`` (one transaction per call) so concurrent calls are coalesced.

    Args:
        append: Appends drafts to the chain in one transaction and returns the sealed records.
        max_drafts: Most drafts in one transaction (bounds the lock hold time).
    """

    def __init__(self, append: Append, *, max_drafts: int = 512) -> None:
        self._append = append
        self._max = max_drafts
        # Per event loop: a store object can outlive a loop (tests), and futures belong to one loop.
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    async def append(self, drafts: list[AuditDraft]) -> list[AuditRecord]:
        if not drafts:
            return []
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        if not state.busy and not state.queue:
            # Nothing in flight: commit in the caller's task (no extra task, no added latency); calls
            # that arrive meanwhile queue up and go together once this one is done.
            state.busy = True
            try:
                return await self._append(drafts)
            finally:
                state.busy = False
                self._kick(loop, state)
        future: asyncio.Future[list[AuditRecord]] = loop.create_future()
        state.queue.append((drafts, future))
        self._kick(loop, state)
        # Shielded: a caller cancelled while its records are being committed must not cancel the
        # transaction that carries other callers' records too.
        return await asyncio.shield(future)

    def _kick(self, loop: asyncio.AbstractEventLoop, state: _LoopState) -> None:
        if state.queue and not state.busy and (state.task is None or state.task.done()):
            state.task = loop.create_task(self._drain(state))

    async def _drain(self, state: _LoopState) -> None:
        state.busy = True
        try:
            while state.queue:
                batch: list[_Pending] = []
                count = 0
                while state.queue and (not batch or count + len(state.queue[0][0]) <= self._max):
                    item = state.queue.pop(0)
                    batch.append(item)
                    count += len(item[0])
                await self._commit(batch)
        finally:
            state.busy = False

    async def _commit(self, batch: list[tuple[list[AuditDraft], asyncio.Future[list[AuditRecord]]]]) -> None:
        if len(batch) == 1:
            drafts, future = batch[0]
            await self._settle(future, drafts)
            return
        try:
            records = await self._append([d for drafts, _ in batch for d in drafts])
        except Exception:
            for drafts, future in batch:  # each caller on its own: only the bad call fails
                await self._settle(future, drafts)
            return
        start = 0
        for drafts, future in batch:
            if not future.done():
                future.set_result(records[start : start + len(drafts)])
            start += len(drafts)

    async def _settle(self, future: asyncio.Future[list[AuditRecord]], drafts: list[AuditDraft]) -> None:
        try:
            records = await self._append(drafts)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(records)
