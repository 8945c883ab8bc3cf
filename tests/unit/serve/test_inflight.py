"""Cancelling a run's work answers its waiting caller with a 409 problem instead of a bare cancel."""

from __future__ import annotations

import asyncio

import pytest

from raygent.serve.errors import RunCancelledError
from raygent.serve.inflight import InflightRuns


async def test_cancel_reaches_the_work_not_the_caller() -> None:
    runs = InflightRuns()
    work_cancelled, started = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            work_cancelled.set()
            raise
        return "never"

    caller = asyncio.create_task(runs.run("run_1", work()))
    await started.wait()
    assert "run_1" in runs and len(runs) == 1
    assert runs.cancel("run_1") and not runs.cancel("run_2")
    with pytest.raises(RunCancelledError) as err:
        await caller
    assert err.value.status == 409 and err.value.extra["run_id"] == "run_1"
    assert work_cancelled.is_set() and "run_1" not in runs


async def test_cancelling_the_caller_cancels_the_work() -> None:
    runs = InflightRuns()
    work_cancelled, started = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            work_cancelled.set()
            raise

    caller = asyncio.create_task(runs.run("run_1", work()))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert work_cancelled.is_set()


async def test_result_passes_through() -> None:
    async def work() -> int:
        return 7

    assert await InflightRuns().run("r", work()) == 7
