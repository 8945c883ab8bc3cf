"""Runs this ingress replica is driving right now, so ``POST /v1/runs/{id}/cancel`` can stop them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from raygent.serve.errors import RunCancelledError

__all__ = ["InflightRuns"]

T = TypeVar("T")


class InflightRuns:
    """Each run's work executes in its own task; :meth:`cancel` cancels that task only.

    The caller awaiting :meth:`run` then gets :class:`RunCancelledError` instead of a bare
    cancellation, so it can still answer its client; cancelling the caller itself (the client went
    away) cancels the run's task too and propagates as usual.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Future[object]] = {}
        # Called as each run starts (the cancel broadcast's idempotent start: a replica listens for
        # cancels from the others once it drives a run).
        self.on_run: Callable[[], None] | None = None

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._tasks))

    async def run(self, run_id: str, work: Awaitable[T]) -> T:
        if self.on_run is not None:
            self.on_run()
        task: asyncio.Future[T] = asyncio.ensure_future(work)
        self._tasks[run_id] = task  # type: ignore[assignment]
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            raise RunCancelledError(f"run {run_id!r} was cancelled", extra={"run_id": run_id}) from None
        finally:
            self._tasks.pop(run_id, None)

    def cancel(self, run_id: str) -> bool:
        """Cancel the run's work if this replica is driving it; True when it was found."""
        task = self._tasks.get(run_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True
