"""Resuming runs parked on a slow backend (``async_mode: park``) once the backend's reply is recorded,
or once it can no longer come.

A run whose ``mq`` tool answered ``tool-pending`` is ``waiting``: its progress is parked (a stateless
agent's in the fleet's parking lot, a stateful one's in its journal) and its request is on record in the
pending-reply store. This resumer listens to the tool's executor: when a reply is recorded it re-invokes
the run with ``resume=True``. The run repeats the parked call with the same call id, and the gateway
answers that call from the recorded reply without sending the request again.

Nothing is lost across a restart. A reply that arrives while no gateway listens stays in the durable
reply queue, and a new gateway records it when its bridge starts. A reply that was recorded but whose
run was not resumed (the process died in between) is found by :meth:`ReplyResumer.sweep`, which
:meth:`ReplyResumer.start` runs. Each run resumes exactly once: a stateless run's parked progress is
*claimed* (read and deleted in one transaction) and a second resumer gets ``ConflictError``; a stateful
agent serialises the runs of a session, so a second resume finds the run already settled.

The run resumed is the *root* run (the one the caller started, as for approvals): a delegated run that
parks parks its caller too, and the caller's repeated call continues the delegated run.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from raygent.core.clock import Clock
from raygent.core.errors import ConflictError
from raygent.core.runs import AgentInvoker, RunInput, RunOutput
from raygent.core.store.base import Store
from raygent.integrations.mq.pending import PendingRecord
from raygent.integrations.mq.tool import MqToolExecutor

if TYPE_CHECKING:
    from raygent.governance.gateway import ToolGateway

__all__ = ["ReplyResumer", "root_run_id"]

log = logging.getLogger("raygent.integrations")

# A reply can arrive before its run has finished parking (the step loop records ``waiting`` a moment
# after the tool answered ``tool-pending``): the listener then waits this long for the run to park.
_PARKING_GRACE_S = 10.0
_PARKING_POLL_S = 0.05


def root_run_id(run_id: str) -> str:
    """The run a caller started: a delegated run's id is its caller's id extended after a dash."""
    return run_id.split("-", 1)[0]


class ReplyResumer:
    """Resumes ``waiting`` runs when their pending reply arrives (one per gateway replica).

    Args:
        executors: The parking ``mq`` tools' executors, by tool name (their listeners are used).
        store: Where runs are recorded (a run resumes only while it is ``waiting``).
        invoker: Runs the agents (in process, or their Serve deployments).
        clock: Time source (the resumed run's new deadline).
        deadlines_s: Each agent's deadline; a resumed run gets a fresh one (as after an approval).
    """

    def __init__(
        self,
        executors: dict[str, MqToolExecutor],
        *,
        store: Store,
        invoker: AgentInvoker,
        clock: Clock,
        deadlines_s: dict[str, float],
    ) -> None:
        self._executors = executors
        self._store = store
        self._invoker = invoker
        self._clock = clock
        self._deadlines_s = deadlines_s
        self._tasks: set[asyncio.Task[RunOutput | None]] = set()
        self.resumed: list[str] = []  # root run ids this resumer continued (for status and tests)
        self._stopped = False
        for executor in executors.values():
            executor.add_listener(self._on_reply)

    @classmethod
    def for_gateway(
        cls, gateway: ToolGateway, *, store: Store, invoker: AgentInvoker, clock: Clock
    ) -> ReplyResumer | None:
        """The resumer of a gateway's parking ``mq`` tools; None when no tool of its fleet parks."""
        fleet = gateway.fleet
        executors: dict[str, MqToolExecutor] = {}
        for name in fleet.tools:
            executor = gateway.executor(name)
            if isinstance(executor, MqToolExecutor) and executor.parks:
                executors[name] = executor
        if not executors:
            return None
        deadlines = {name: spec.deadline_s for name, spec in fleet.agents.items()}
        return cls(executors, store=store, invoker=invoker, clock=clock, deadlines_s=deadlines)

    async def start(self) -> int:
        """Start listening for replies (also those that waited in the durable reply queues while no
        gateway ran) and resume the runs whose reply was recorded while nobody resumed them.

        Returns:
            How many runs the sweep resumed.
        """
        await self._listen()
        return await self.sweep()

    async def _listen(self) -> None:
        for name, executor in self._executors.items():
            try:
                await executor.bridge.start()  # a no-op once it consumes
            except Exception:  # a broker that is down: the next sweep round (or tool call) tries again
                log.exception("could not start listening for replies of tool %s", name)

    def stop(self) -> None:
        """Resume nothing more here (shutting down); replies recorded from now on wait for a sweep."""
        self._stopped = True

    async def _on_reply(self, record: PendingRecord) -> None:
        if self._stopped:
            return
        # Not awaited here: the bridge acknowledges the reply after its listeners return, and a resumed
        # run may take long. If this process dies before the run resumes, the next sweep resumes it.
        task = asyncio.get_running_loop().create_task(self._resume_logged(record.run_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resume_logged(self, run_id: str) -> RunOutput | None:
        try:
            await self._until_parked(root_run_id(run_id))
            return await self.resume(run_id)
        except Exception:
            log.exception("could not resume run %s after its reply arrived", run_id)
            return None

    async def _until_parked(self, root: str) -> None:
        until = self._clock.monotonic() + _PARKING_GRACE_S
        while self._clock.monotonic() < until:
            record = await self._store.get_run(root)
            if record is None or record.status not in ("queued", "running"):
                return
            await asyncio.sleep(_PARKING_POLL_S)

    async def resume(self, run_id: str) -> RunOutput | None:
        """Continue the root run of ``run_id`` if it is still ``waiting``; None when it is not (it was
        resumed already, or never parked)."""
        root = root_run_id(run_id)
        record = await self._store.get_run(root)
        if record is None or record.status != "waiting":
            return None
        deadline_s = self._deadlines_s.get(record.agent)
        if deadline_s is None:
            log.warning("run %s waits for agent %r, which this fleet no longer has", root, record.agent)
            return None
        req = RunInput(
            run_id=root,
            agent=record.agent,
            input=record.input,
            session_id=record.session_id,
            deadline_ts=self._clock.now() + deadline_s,
            caller_chain=tuple(record.caller_chain),
            requester=record.requester,
            end_user=record.end_user,
            resume=True,
        )
        try:
            out = await self._invoker.invoke(req)
        except ConflictError:
            return None  # another resumer claimed it first
        self.resumed.append(root)
        return out

    async def sweep(self) -> int:
        """Resume every run whose pending reply is recorded while the run still waits, and every run
        whose call expired (``async_timeout_s`` passed without a reply): the resumed run's repeated call
        then fails with a clear ``tool-timeout``, so no run waits forever."""
        resumed, seen = 0, set()
        for executor in self._executors.values():
            pending = executor.pending
            if pending is None:
                continue
            now = self._clock.now()
            since = now - executor.async_timeout_s
            done = await pending.list_replied(since_ts=since)
            overdue = await pending.list_overdue(now=now, since_ts=since)
            for record in overdue:
                if record.state == "pending":
                    await pending.expire(record.correlation_id)
            for record in [*done, *overdue]:
                root = root_run_id(record.run_id)
                if root in seen:
                    continue
                seen.add(root)
                try:
                    if await self.resume(root) is not None:
                        resumed += 1
                except Exception:  # one bad run must not stop the sweep of the others
                    log.exception("could not resume run %s", root)
        return resumed

    async def sweep_forever(self, interval_s: float) -> None:
        """Sweep every ``interval_s`` (a reply another replica recorded, a listener that failed, a call
        that expired)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self._listen()
                await self.sweep()
            except Exception:  # a store hiccup must not end the sweeper; the next round retries
                log.exception("pending-reply sweep failed")

    async def drain(self) -> None:
        """Wait for the resumes the listener started (tests, orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
