"""bridge(): callback producers as streams — order, errors, and cancellation when the consumer leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from raygent.serve.events import Final, bridge

Emit = Callable[[int], Awaitable[None]]


async def test_items_then_the_result_in_order() -> None:
    async def produce(emit: Emit) -> str:
        for i in range(100):  # more than the queue holds: the producer waits for the consumer
            await emit(i)
        return "done"

    items = [item async for item in bridge(produce, maxsize=4)]
    assert items[:-1] == list(range(100)) and items[-1] == Final("done")


async def test_producer_error_reaches_the_consumer_after_its_items() -> None:
    async def produce(emit: Emit) -> None:
        await emit(1)
        raise ValueError("boom")

    seen = []
    with pytest.raises(ValueError, match="boom"):
        async for item in bridge(produce):
            seen.append(item)
    assert seen == [1]


async def test_closing_early_cancels_the_producer() -> None:
    cancelled = asyncio.Event()

    async def produce(emit: Emit) -> None:
        try:
            await emit(1)
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stream = bridge(produce)
    assert await anext(stream) == 1
    await stream.aclose()
    assert cancelled.is_set()
