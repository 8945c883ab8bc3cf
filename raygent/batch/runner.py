"""The batch loop: read the input, skip what is already recorded, run the rest with bounded concurrency,
record each finished line durably, and write the results and errors files at the end.

The same loop runs a fresh batch and a resumed one: progress.db says which lines are done. Malformed
lines are recorded as ``invalid`` (they go to the errors file with their line numbers) and never stop
the batch; an item whose worker was lost runs again, up to ``max_item_attempts`` times.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator

from raygent.batch.errors import BatchInputError, WorkerLostError
from raygent.batch.executor import Executor
from raygent.batch.items import BatchItem, LineError, parse_lines
from raygent.batch.manifest import BatchManifest, BatchPaths, item_run_id
from raygent.batch.progress import ItemRecord, ProgressStore, ProgressSummary
from raygent.core.clock import Clock
from raygent.core.errors import RaygentError

__all__ = ["BatchRunner"]

log = logging.getLogger("raygent.batch")

_MAX_BACKOFF_S = 10.0


class BatchRunner:
    """Runs one batch to its end (or until cancelled).

    Args:
        paths: The batch's directory.
        manifest: What to run.
        executor: Where items run.
        max_input_chars: The agent's input limit (longer lines are invalid).
        clock: Time source.
        on_record: Called after each recorded line (progress reporting).
    """

    def __init__(
        self,
        paths: BatchPaths,
        manifest: BatchManifest,
        executor: Executor,
        *,
        max_input_chars: int,
        clock: Clock,
        on_record: Callable[[ItemRecord], None] | None = None,
    ) -> None:
        self._paths = paths
        self._manifest = manifest
        self._executor = executor
        self._max_input_chars = max_input_chars
        self._clock = clock
        self._on_record = on_record
        self._progress = ProgressStore(paths.progress)

    @property
    def progress(self) -> ProgressStore:
        return self._progress

    def _parsed(self) -> Iterator[BatchItem | LineError]:
        try:
            with self._paths.input.open("rb") as file:
                yield from parse_lines(file, max_input_chars=self._max_input_chars)
        except OSError as exc:
            raise BatchInputError(f"cannot read the batch input: {exc.strerror or exc}") from None

    def _prepare(self) -> int:
        """Record invalid lines not yet recorded; returns the number of lines (items and invalid)."""
        done = self._progress.finished_lines()
        total = 0
        for parsed in self._parsed():
            total += 1
            if isinstance(parsed, LineError) and parsed.line not in done:
                self._record(ItemRecord.invalid(parsed, self._clock.now()))
        return total

    def _record(self, record: ItemRecord) -> None:
        if self._progress.record(record) and self._on_record is not None:
            self._on_record(record)

    def _pending(self) -> Iterator[BatchItem]:
        done = self._progress.finished_lines()
        for parsed in self._parsed():
            if isinstance(parsed, BatchItem) and parsed.line not in done:
                yield parsed

    async def _run_item(self, item: BatchItem) -> ItemRecord:
        attempts = self._manifest.max_item_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self._executor.run(item, attempt)
            except WorkerLostError as exc:
                if attempt == attempts:
                    return ItemRecord(
                        line=item.line,
                        custom_id=item.custom_id,
                        status="failed",
                        finished_at=self._clock.now(),
                        run_id=item_run_id(self._manifest.batch_id, item.line),
                        error=exc.to_problem(),
                        attempts=attempt,
                    )
                # Jittered, doubling pause: Ray takes seconds to declare a node dead and re-create its
                # actors elsewhere (or the autoscaler to add a node), so the attempts span that time.
                pause_s = min(self._manifest.retry_backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
                await asyncio.sleep(pause_s * random.uniform(0.5, 1.5))
            except Exception as exc:
                # A bug or an unexpected error fails this item, not the batch.
                log.exception("line %d failed unexpectedly", item.line)
                problem = RaygentError(f"internal error running line {item.line}: {type(exc).__name__}")
                return ItemRecord(
                    line=item.line,
                    custom_id=item.custom_id,
                    status="failed",
                    finished_at=self._clock.now(),
                    run_id=item_run_id(self._manifest.batch_id, item.line),
                    error=problem.to_problem(),
                    attempts=attempt,
                )
        raise AssertionError("unreachable: the last attempt returns")

    async def _lane(self, pending: Iterator[BatchItem]) -> None:
        # Lanes share one iterator: at most max_concurrency items are in flight, and a file of any size
        # is never held in memory whole.
        for item in pending:
            self._record(await self._run_item(item))

    async def run(self) -> ProgressSummary:
        """Run every line not yet recorded; returns the final summary.

        On cancellation the batch is marked ``cancelled`` (resumable) and the cancellation re-raised.
        """
        total = self._prepare()
        self._progress.set_state("running", now=self._clock.now(), total=total)
        await self._executor.start()
        try:
            pending = self._pending()
            async with asyncio.TaskGroup() as group:
                for _ in range(self._manifest.max_concurrency):
                    group.create_task(self._lane(pending))
        except asyncio.CancelledError:
            self.finish("cancelled", "cancelled; `raygent batch resume` runs the rest")
            raise
        except Exception as exc:
            self.finish("failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            await self._executor.close()
        self.finish("completed")
        return self._progress.summary()

    def finish(self, status: str, message: str = "") -> None:
        """Write the results and errors files from what is recorded, then the final state."""
        self._progress.export(self._paths.results, self._paths.errors)
        self._progress.set_state(status, now=self._clock.now(), message=message)  # type: ignore[arg-type]

    def close(self) -> None:
        self._progress.close()
