"""Turning a callback-style producer into an async stream (:func:`bridge`).

Streamed runs use it wherever they execute: an agent replica, a stateful session's actor, the router's
streamed model call, or a fleet served in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Final", "bridge"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Final(Generic[R]):
    """The producer's return value, the last item :func:`bridge` yields."""

    value: R


async def bridge(
    produce: Callable[[Callable[[T], Awaitable[None]]], Awaitable[R]], *, maxsize: int = 64
) -> AsyncGenerator[T | Final[R], None]:
    """Run ``produce(emit)`` and yield what it emits, then :class:`Final` with its result.

    The queue between them is bounded, so a slow consumer slows the producer instead of growing
    memory. Closing the iterator early (a client went away) cancels the producer; an exception of the
    producer is raised to the consumer after the items emitted before it.
    """
    queue: asyncio.Queue[T] = asyncio.Queue(maxsize=maxsize)
    task = asyncio.ensure_future(produce(queue.put))
    getter: asyncio.Future[T] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                continue
            getter.cancel()
            while not queue.empty():
                yield queue.get_nowait()
            yield Final(task.result())
            return
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
