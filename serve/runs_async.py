"""Async runs: accepted with ``202``, executed in the background, announced by a signed callback.

Where the work runs, and why nothing accepted is lost:

1. ``accept`` writes the run to the async ledger (state ``queued``, owned by this ingress replica with a
   lease) *before* the ``202`` is sent; if the write fails the client gets an error, not a ``202``.
2. A task in this replica waits for an admission slot (async runs queue here, bounded by
   ``server.max_async_pending``, instead of in Serve), calls the agent, records the outcome in the
   ledger, then delivers the callback, recording every attempt on the entry.
3. A sweeper renews this replica's leases every ``sweep_interval_s``. If the replica dies (or the whole
   fleet restarts), its leases run out after ``lease_s`` and any ingress replica's sweeper claims the
   entries: a run that never started is dispatched (the store refuses a second start of one run id, so
   a run is never executed twice); a run the agent already finished gets its outcome recorded and its
   callback (re)delivered; a run still ``running`` is watched until it ends or its deadline passes,
   after which it is recorded as ``failed`` (its agent is gone) and the callback says so.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import ConflictError, OverloadedError
from raygent.core.runs import RunInput
from raygent.core.store.asyncruns import AsyncRunEntry, AsyncRunLedger
from raygent.core.store.base import RunRecord, RunState, Store
from raygent.serve.admission import AdmissionController
from raygent.serve.agents import AgentPort
from raygent.serve.callbacks import CallbackSender
from raygent.serve.errors import RunCancelledError
from raygent.serve.inflight import InflightRuns
from raygent.serve.views import FINAL_STATES, record_view, served_view

__all__ = ["AsyncRunner"]

log = logging.getLogger("raygent.serve.async")

_GRACE_S = 10.0  # past a run's deadline before a silent agent is declared gone
_POLL_S = 0.25
# Parked runs end later, resumed by a reply (``waiting``) or a person's decision (``needs_approval``,
# bounded by ``approvals.timeout_s``); their callback reports that end.
_PARKED = frozenset({"waiting", "needs_approval"})


class _LeaseLost(Exception):
    """Another dispatcher took the entry over (this one was presumed dead); stop driving it."""


class AsyncRunner:
    """Drives this ingress replica's async runs and takes over those of dispatchers that are gone.

    Args:
        fleet: The fleet (limits, agents' specs).
        ledger: The async-run ledger shared by every ingress replica.
        store: Runs (the agents write them; this writes only runs that never started).
        agents: How to reach agents.
        admission: The replica's admission controller (async runs wait for a slot).
        inflight: Registry that makes runs cancellable.
        sender: Callback delivery.
        clock: Time source.
        owner: This dispatcher's id (unique per replica incarnation).
        lease_s: How long an entry stays owned without renewal.
        sweep_interval_s: How often leases are renewed and abandoned entries claimed.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        ledger: AsyncRunLedger,
        store: Store,
        agents: AgentPort,
        admission: AdmissionController,
        inflight: InflightRuns,
        sender: CallbackSender,
        clock: Clock,
        owner: str,
        lease_s: float = 30.0,
        sweep_interval_s: float = 2.0,
    ) -> None:
        self._fleet = fleet
        self._ledger = ledger
        self._store = store
        self._agents = agents
        self._admission = admission
        self._inflight = inflight
        self._sender = sender
        self._clock = clock
        self._owner = owner
        self._lease_s = lease_s
        self._sweep_interval_s = sweep_interval_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Async runs this replica is driving (running, waiting for a slot, or delivering)."""
        return len(self._tasks)

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def sender(self) -> CallbackSender:
        return self._sender

    def check_room(self) -> None:
        """Raise OverloadedError (before anything is written) when this replica holds its maximum."""
        limit = self._fleet.server.max_async_pending
        if len(self._tasks) >= limit:
            raise OverloadedError(
                f"{limit} async runs are pending on this ingress; retry shortly",
                retry_after_s=self._fleet.server.retry_after_s,
            )

    async def accept(self, entry: AsyncRunEntry) -> None:
        """Record ``entry`` as queued and start driving it; the caller sends ``202`` after this returns.

        Raises:
            OverloadedError: Too many async runs pending here (nothing was recorded).
            StoreError: The ledger could not record it (nothing was accepted).
        """
        self.check_room()
        entry.owner, entry.lease_until = self._owner, self._clock.now() + self._lease_s
        await self._ledger.add(entry)
        self._spawn(entry)
        self.start()

    def start(self) -> None:
        """Start the sweeper (idempotent); it also recovers entries left by dispatchers that died."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def aclose(self) -> None:
        tasks = [t for t in (self._sweeper, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def cancel(self, run_id: str) -> AsyncRunEntry | None:
        """Request cancellation; the owner (this replica or another) stops the run."""
        entry = await self._ledger.request_cancel(run_id)
        if entry is not None and entry.state != "finished":
            self._inflight.cancel(run_id)
        return entry

    # ------------------------------------------------------------------------------------------ sweeping

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a store hiccup must not end the sweeper; the next round retries
                log.exception("async-run sweep failed")
            await asyncio.sleep(self._sweep_interval_s)

    async def sweep(self) -> None:
        """Renew this replica's leases, act on cancel requests, and claim abandoned entries."""
        now = self._clock.now()
        to_cancel = await self._ledger.renew(self._owner, list(self._tasks), lease_until=now + self._lease_s)
        for run_id in to_cancel:
            self._inflight.cancel(run_id)
        room = self._fleet.server.max_async_pending - len(self._tasks)
        if room <= 0:
            return
        for entry in await self._ledger.expired(now=now, limit=min(room, 64)):
            if entry.run_id in self._tasks:
                continue
            claimed = await self._ledger.claim(entry.run_id, self._owner, now=now, lease_s=self._lease_s)
            if claimed is not None:
                log.info("taking over async run %s (state %s)", claimed.run_id, claimed.state)
                self._spawn(claimed)

    # ------------------------------------------------------------------------------------------ driving

    def _spawn(self, entry: AsyncRunEntry) -> None:
        task = asyncio.get_running_loop().create_task(self._drive(entry))
        self._tasks[entry.run_id] = task
        run_id = entry.run_id

        def forget(_: asyncio.Task[None]) -> None:
            self._tasks.pop(run_id, None)

        task.add_done_callback(forget)

    async def _drive(self, entry: AsyncRunEntry) -> None:
        try:
            if entry.state != "finished":
                outcome = await self._execute(entry)
                entry.state, entry.outcome = "finished", outcome
                entry.delivery = "pending" if entry.callback_url else "none"
                await self._save(entry)
            if entry.delivery == "pending":
                await self._deliver(entry)
        except _LeaseLost:
            log.warning("async run %s was taken over by another dispatcher", entry.run_id)
        except Exception:  # the lease runs out and a sweeper retries the entry
            log.exception("async run %s could not be driven; it will be retried", entry.run_id)

    async def _save(self, entry: AsyncRunEntry) -> None:
        if not await self._ledger.save(entry, owner=self._owner):
            raise _LeaseLost(entry.run_id)

    async def _execute(self, entry: AsyncRunEntry) -> dict[str, Any]:
        if entry.state == "dispatched":
            # Taken over: the previous dispatcher may or may not have reached the agent.
            record = await self._store.get_run(entry.run_id)
            if record is not None:
                return await self._watch(entry, record)
        try:
            return await self._inflight.run(entry.run_id, self._dispatch(entry))
        except RunCancelledError:
            return await self._after_cancel(entry)

    async def _dispatch(self, entry: AsyncRunEntry) -> dict[str, Any]:
        if entry.cancel_requested:
            return await self._never_started(entry, "cancelled")
        remaining = entry.deadline_ts - self._clock.now()
        try:
            ticket = await self._admission.admit_wait(entry.agent, _priority(entry), timeout_s=remaining)
        except TimeoutError:
            return await self._never_started(entry, "timed_out")
        with ticket:
            entry.state = "dispatched"
            await self._save(entry)
            req = RunInput(
                run_id=entry.run_id,
                agent=entry.agent,
                input=entry.input,
                session_id=entry.session_id,
                deadline_ts=entry.deadline_ts,
                traceparent=entry.traceparent,
                latency_budget_ms=entry.latency_budget_ms,
                requester=entry.requester,  # governed fleets: the same policies as a sync run
                end_user=entry.end_user,
            )
            attempt = 0
            while True:
                try:
                    served = await self._agents.run(req)
                    if served.output.status not in _PARKED:
                        return served_view(served)
                    break
                except OverloadedError:
                    # Serve's own queue bound (the backstop) refused it: the run did not start. Wait and
                    # retry within the run's deadline; async work is allowed to wait.
                    attempt += 1
                    delay = random.uniform(0, min(2.0, 0.05 * 2**attempt))
                    if self._clock.now() + delay >= entry.deadline_ts:
                        return await self._never_started(entry, "timed_out")
                    await asyncio.sleep(delay)
                except ConflictError:
                    # The run id exists: an earlier dispatch reached the agent after all. Watch it.
                    record = await self._store.get_run(entry.run_id)
                    if record is None:
                        raise
                    return await self._watch(entry, record)
        # Parked on a slow backend (``waiting``) or for a person (``needs_approval``): the admission slot
        # is free again, and the callback is for the run's end, after its resumer continues it.
        parked = await self._store.get_run(entry.run_id)
        return await self._watch(entry, parked) if parked is not None else served_view(served)

    async def _after_cancel(self, entry: AsyncRunEntry) -> dict[str, Any]:
        """The run was cancelled: its agent records it (if it started); otherwise record it here."""
        deadline = self._clock.monotonic() + _GRACE_S
        while self._clock.monotonic() < deadline:
            record = await self._store.get_run(entry.run_id)
            if record is None:
                return await self._never_started(entry, "cancelled")
            if record.status in FINAL_STATES:
                return record_view(record)
            await asyncio.sleep(_POLL_S)
        record = await self._store.get_run(entry.run_id)
        return (
            await self._watch(entry, record)
            if record is not None
            else await self._never_started(entry, "cancelled")
        )

    async def _watch(self, entry: AsyncRunEntry, record: RunRecord) -> dict[str, Any]:
        """Wait for a run another process is executing; declare it lost once past its deadline (a run
        ``waiting`` for a slow backend's reply is parked durably, not lost: its resumer continues it)."""
        while record.status not in FINAL_STATES:
            # A parked run is not lost while it waits, and once resumed it runs under a new deadline:
            # a run is declared lost only a whole run's time after its last recorded progress.
            spec = self._fleet.agents.get(entry.agent)
            limit = max(entry.deadline_ts, record.updated_at + (spec.deadline_s if spec else 0.0))
            if record.status not in _PARKED and self._clock.now() > limit + _GRACE_S:
                record.status = "failed"
                record.error = {
                    "type": "https://raygent.dev/problems/run-lost",
                    "title": "Run lost",
                    "status": 500,
                    "detail": "the agent executing this run stopped before finishing it; it was not retried",
                    "instance": f"/v1/runs/{record.run_id}",
                }
                record.updated_at = self._clock.now()
                await self._store.save_run(record)
                break
            await asyncio.sleep(_POLL_S)
            latest = await self._store.get_run(entry.run_id)
            record = latest if latest is not None else record
        return record_view(record)

    async def _never_started(self, entry: AsyncRunEntry, status: RunState) -> dict[str, Any]:
        """Record a run that ends without reaching an agent (cancelled while queued, or expired)."""
        slug, title, code, detail = {
            "cancelled": ("cancelled", "Run cancelled", 409, "the run was cancelled before it started"),
            "timed_out": (
                "deadline-exceeded",
                "Deadline exceeded",
                504,
                "the run's deadline passed before an agent was free",
            ),
        }[status]
        now = self._clock.now()
        record = RunRecord(
            run_id=entry.run_id,
            agent=entry.agent,
            session_id=entry.session_id,
            status=status,
            input=entry.input,
            created_at=entry.accepted_at,
            updated_at=now,
            error={
                "type": f"https://raygent.dev/problems/{slug}",
                "title": title,
                "status": code,
                "detail": detail,
                "instance": f"/v1/runs/{entry.run_id}",
            },
            identity=self._fleet.agents[entry.agent].identity,
            requester=entry.requester,
            end_user=entry.end_user,
        )
        try:
            await self._store.create_run(record)
        except ConflictError:  # it started after all; report what it became
            existing = await self._store.get_run(entry.run_id)
            if existing is not None:
                return await self._watch(entry, existing)
        return record_view(record)

    async def _deliver(self, entry: AsyncRunEntry) -> None:
        if entry.callback_url is None or entry.outcome is None:  # nothing to deliver
            entry.delivery = "none"
            await self._save(entry)
            return

        async def on_attempt(attempt: dict[str, Any]) -> None:
            entry.deliveries.append(attempt)
            await self._save(entry)

        payload = {"type": "run.finished", "run": entry.outcome}
        delivered = await self._sender.deliver(
            entry.callback_url,
            payload,
            tenant=entry.tenant,
            delivery_id=entry.run_id,
            on_attempt=on_attempt,
            first_attempt=len(entry.deliveries) + 1,
        )
        entry.delivery = "delivered" if delivered else "failed"
        await self._save(entry)


def _priority(entry: AsyncRunEntry) -> Any:
    return "batch" if entry.priority == "batch" else "interactive"
