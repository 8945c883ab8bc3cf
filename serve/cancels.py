"""Cancelling a run that another ingress replica drives.

With ``server.replicas`` above one, ``POST /v1/runs/{id}/cancel`` lands on any replica, but a
synchronous or streamed run is driven by the replica that took its request (async runs already have
their ledger). That replica is found by asking them all: a :class:`CancelBoard` actor (one per fleet,
named, so every replica on every node of the cluster reaches the same one) keeps the recent cancel
requests, and each replica's :class:`CancelBroadcast` long-polls it while it serves. The replica that
holds the run cancels it and says so, and the one that was asked answers ``202`` only then; when no
replica holds the run within ``wait_s`` the request is refused as before.

Costs nothing per run: one outstanding actor call per replica, answered when a cancel is posted (or
every ``poll_s``). The board is owned by the replica that made it; if that replica goes (scaled down,
crashed) the board goes too and the next call makes a new one, whose ``epoch`` tells listeners to read
it from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from typing import Any

from raygent.serve.inflight import InflightRuns

__all__ = ["CancelBoard", "CancelBroadcast", "board_name"]

log = logging.getLogger("raygent.serve")

_RECENT = 4096  # cancel requests a listener that fell behind can still catch up on
_RETRY_S = 0.5  # pause after a failed board call (the board is being re-made)


def board_name(fleet_name: str) -> str:
    return f"raygent-cancels-{fleet_name}"


class CancelBoard:
    """The fleet's recent cancel requests (a Ray actor; every method runs on its one event loop)."""

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(8)
        self._seq = 0
        # [seq, run id, pending]: a post stops pending once a replica answered it or its wait ran out
        # (withdrawn: a listener that reads it late must not cancel a run whose caller was told 409).
        self._recent: deque[list[Any]] = deque(maxlen=_RECENT)
        self._posted = asyncio.Condition()
        self._found: dict[str, asyncio.Event] = {}

    async def listen(self, epoch: str | None, after: int, timeout_s: float) -> tuple[str, int, list[str]]:
        """Pending cancel requests posted after ``after``; waits up to ``timeout_s`` for one. Returns
        ``(epoch, newest seq, run ids)``. A first call (``epoch`` None), or one of a listener of an
        older board (it went with its owner replica), gets every request still pending: one posted
        while the listener was starting may be about a run it already drives."""
        if epoch != self.epoch:
            after = 0
        if self._seq <= after:
            async with self._posted:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._posted.wait_for(lambda: self._seq > after), timeout_s)
        return (
            self.epoch,
            self._seq,
            [run_id for seq, run_id, pending in self._recent if seq > after and pending],
        )

    async def post(self, run_id: str, wait_s: float) -> bool:
        """Ask every replica to cancel ``run_id``; True once one of them did (within ``wait_s``)."""
        found = self._found.setdefault(run_id, asyncio.Event())
        self._seq += 1
        entry = [self._seq, run_id, True]
        self._recent.append(entry)
        async with self._posted:
            self._posted.notify_all()
        try:
            await asyncio.wait_for(found.wait(), wait_s)
            return True
        except TimeoutError:
            return False
        finally:
            entry[2] = False
            if self._found.get(run_id) is found:
                del self._found[run_id]

    async def found(self, run_id: str) -> None:
        """A replica cancelled ``run_id``. (Async, so it runs on the loop that owns the events.)"""
        event = self._found.get(run_id)
        if event is not None:
            event.set()


class CancelBroadcast:
    """One ingress replica's side of the board: it listens for cancels of the runs it drives
    (:meth:`start`, idempotent) and posts cancels of runs it does not (:meth:`post`).

    Args:
        fleet_name: Names the board (one per fleet).
        inflight: This replica's runs.
        wait_s: How long :meth:`post` waits for the replica that drives the run.
        poll_s: Longest wait of one listening call.
    """

    def __init__(
        self, fleet_name: str, inflight: InflightRuns, *, wait_s: float = 2.0, poll_s: float = 30.0
    ) -> None:
        self._name = board_name(fleet_name)
        self._inflight = inflight
        self._wait_s = wait_s
        self._poll_s = poll_s
        self._board: Any = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening (no-op when already listening, or outside Ray); call on the event loop."""
        if (self._task is None or self._task.done()) and _ray_is_up():
            self._task = asyncio.get_running_loop().create_task(self._listen_forever())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def post(self, run_id: str) -> bool:
        """True when another replica held ``run_id`` and cancelled it."""
        if not _ray_is_up():
            return False
        for attempt in range(2):
            try:
                board = await self._handle()
                return bool(await board.post.remote(run_id, self._wait_s))
            except Exception:  # the board went with its owner replica: one more try on a new one
                self._board = None
                if attempt:
                    log.warning("could not post the cancel of run %s to the other replicas", run_id)
        return False

    async def _handle(self) -> Any:
        if self._board is None:
            # Named lookup or creation is a blocking GCS call: off the event loop.
            self._board = await asyncio.to_thread(_get_or_make_board, self._name)
        return self._board

    async def _listen_forever(self) -> None:
        epoch: str | None = None
        after = 0
        while True:
            try:
                board = await self._handle()
                epoch, after, run_ids = await board.listen.remote(epoch, after, self._poll_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._board = None
                await asyncio.sleep(_RETRY_S)
                continue
            for run_id in run_ids:
                if self._inflight.cancel(run_id):
                    with contextlib.suppress(Exception):
                        await board.found.remote(run_id)


def _ray_is_up() -> bool:
    # Never start Ray by accident (an ApiService outside Serve, in tests or in-process fleets).
    import ray

    return bool(ray.is_initialized())


def _get_or_make_board(name: str) -> Any:
    import ray

    actor = ray.remote(num_cpus=0, max_restarts=0)(CancelBoard)
    return actor.options(name=name, get_if_exists=True).remote()
