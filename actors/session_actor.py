"""Stateful agents on Ray: one named actor per live session, restarted by Ray after a crash.

:class:`SessionDirectory` (held by the agent's Serve deployment, see ``raygent.serve.stateful``) finds
or creates the session's actor by name, so any replica of the deployment reaches the same actor. The
actor is created with ``max_restarts`` from the fleet file and ``max_task_retries=-1``: when its worker
process dies, Ray starts a new one and re-sends the call that was in flight. The new incarnation
restores the session from its last checkpoint before it serves anything and resumes the run by id,
where the checkpoint left it; side effects already done are replayed from the effect ledger.

An actor idle for the agent's ``idle_release_s`` releases itself (its state is already checkpointed:
every step is). The next request for the session creates a fresh actor, which restores the state.

A streamed run is the same run with its events forwarded: ``SessionActor.run_events`` is an async
generator that Ray streams back (``num_returns="streaming"``). Ray does not re-send it when the actor
dies (a resumed run streams other events than the first try, and Ray replays a stream expecting the
same ones); :meth:`SessionDirectory.run_events` re-sends it instead, and the next incarnation resumes
the run from its checkpoint and streams the steps left. A caller that goes away cancels the actor's
task, so the run stops where it executes and is recorded as cancelled.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from raygent.actors.errors import SessionActorDiedError
from raygent.actors.stateful import SessionHost
from raygent.core.clock import Clock, SystemClock
from raygent.core.config import Fleet
from raygent.core.errors import DeadlineExceededError
from raygent.core.faults import FaultHook
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolStage
from raygent.core.remote import RemoteModelStage, RemoteToolStage, unwrap_remote_error
from raygent.core.runs import RunEvent, RunInput, RunOutput
from raygent.core.store import open_store
from raygent.router.streaming import RemoteStreamingModelStage, TextSink
from raygent.telemetry.runtime import fleet_tracer

__all__ = ["RetryingToolStage", "SessionActor", "SessionDirectory", "session_actor_name"]

NAMESPACE = "raygent"
_DIRECTORY_ATTEMPTS = 5
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 2.0
# Runtime-managed process death (gateway replica gone or restarting), not a tool failure.
_PROCESS_GONE = (RayActorError, ActorUnavailableError)


def session_actor_name(app_name: str, agent: str, session_id: str) -> str:
    return f"{app_name}/{agent}/{session_id}"


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2**attempt))


class RetryingToolStage(ToolStage):
    """Re-sends a tool call whose gateway process died, until the run's deadline.

    Safe only because the call keeps its id: the gateway's effect ledger makes a side effect happen
    once however often the call arrives, and tools without side effects may run again.
    """

    def __init__(self, inner: ToolStage, clock: Clock) -> None:
        self._inner = inner
        self._clock = clock

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        attempt = 0
        while True:
            try:
                return await self._inner.call_tool(inp)
            except _PROCESS_GONE as exc:
                deadline = inp.ctx.deadline_ts
                if deadline is not None and self._clock.now() >= deadline:
                    raise DeadlineExceededError(
                        f"the gateway stayed unavailable until the run's deadline: {type(exc).__name__}"
                    ) from None
                await asyncio.sleep(_backoff(attempt))
                attempt += 1


class SessionActor:
    """The Ray actor of one live session (named ``app/agent/session`` in the ``raygent`` namespace).

    Args:
        fleet: The loaded fleet.
        agent: A stateful agent of the fleet.
        session_id: The session.
        router: Handle of the router deployment.
        gateway: Handle of the gateway deployment.
    """

    def __init__(self, fleet: Fleet, agent: str, session_id: str, router: Any, gateway: Any) -> None:
        clock = SystemClock()
        self._provider, tracer = fleet_tracer(fleet, f"agent.{agent}")
        self._store = open_store(fleet)
        router_stream = router.options(stream=True)

        def streaming(on_delta: TextSink) -> RemoteStreamingModelStage:
            return RemoteStreamingModelStage(router_stream, on_delta)

        self._host = SessionHost(
            fleet,
            agent,
            session_id,
            store=self._store,
            model=RemoteModelStage(router),
            tools=RetryingToolStage(RemoteToolStage(gateway), clock),
            tracer=tracer,
            clock=clock,
            faults=FaultHook.for_fleet(fleet.faults, fleet.state_path(".")),
            streaming=streaming,
        )
        self._idle_release_s = fleet.agents[agent].idle_release_s
        self._watch: asyncio.Task[None] | None = None

    async def ready(self) -> dict[str, Any]:
        """Restore from the last checkpoint (the first call after every start does this first)."""
        runtime = await self._host.ensure()
        self._start_watch()
        return {"version": runtime.version, "pending_runs": runtime.pending_runs()}

    async def run(self, req: RunInput) -> RunOutput:
        self._start_watch()
        return await self._host.run(req)

    async def run_events(self, req: RunInput) -> AsyncIterator[RunEvent]:
        """The run as a stream: ``step`` and ``delta`` events, then ``done`` (call it streaming)."""
        self._start_watch()
        async with aclosing(self._host.run_events(req)) as events:
            async for event in events:
                yield event

    def _start_watch(self) -> None:
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._release_when_idle())

    async def _release_when_idle(self) -> None:
        period = max(0.05, min(self._idle_release_s / 4, 5.0))
        while True:
            await asyncio.sleep(period)
            # No await between this check and the kill: no run can slip in between.
            if self._host.idle_for_s() >= self._idle_release_s:
                await self._store.close()
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return


class SessionDirectory:
    """Finds or creates the actor of a session and calls it, across idle releases and crashes.

    Args:
        fleet: The loaded fleet.
        agent: A stateful agent of the fleet.
        router: Handle of the router deployment (handed to each session actor).
        gateway: Handle of the gateway deployment.
        app_name: The Serve application; session actors of different apps never mix.
        actor: The session actor's class (tests put one that fails in its place).
    """

    def __init__(
        self,
        fleet: Fleet,
        agent: str,
        router: Any,
        gateway: Any,
        *,
        app_name: str,
        actor: type[Any] = SessionActor,
    ) -> None:
        self._fleet, self._agent, self._app = fleet, agent, app_name
        self._router, self._gateway = router, gateway
        self._spec = fleet.agents[agent]
        self._actor_class = ray.remote(actor)
        self._handles: dict[str, Any] = {}

    def handle(self, session_id: str) -> Any:
        """The session's actor, created (and restored from its checkpoint) when none is alive."""
        handle = self._handles.get(session_id)
        if handle is None:
            handle = self._actor_class.options(
                name=session_actor_name(self._app, self._agent, session_id),
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                max_restarts=self._spec.max_restarts,
                max_task_retries=-1,
                num_cpus=self._spec.num_cpus,
            ).remote(self._fleet, self._agent, session_id, self._router, self._gateway)
            if len(self._handles) >= 4096:
                self._handles.pop(next(iter(self._handles)))
            self._handles[session_id] = handle
        return handle

    async def _handle(self, session_id: str) -> Any:
        """:meth:`handle` without stalling the event loop: finding or creating a named actor asks Ray's
        control store synchronously, so a session not seen yet is looked up on a worker thread."""
        handle = self._handles.get(session_id)
        if handle is not None:
            return handle
        return await asyncio.to_thread(self.handle, session_id)

    async def run(self, req: RunInput) -> RunOutput:
        """Run ``req`` on its session's actor; a dead actor (released, or out of restarts) is replaced.

        Raises:
            SessionActorDiedError: The session's actors kept dying; the run stays resumable.
        """
        last: BaseException | None = None
        for attempt in range(_DIRECTORY_ATTEMPTS):
            ref = (await self._handle(req.session_id)).run.remote(req)
            try:
                out: RunOutput = await ref
                return out
            except asyncio.CancelledError:
                ray.cancel(ref)  # awaiting a ref and being cancelled does not cancel the actor's task
                raise
            except _PROCESS_GONE as exc:
                last = exc
                self._handles.pop(req.session_id, None)
                await asyncio.sleep(_backoff(attempt))
            except Exception as exc:
                raise unwrap_remote_error(exc) from None
        raise self._died(req, last)

    async def run_events(self, req: RunInput) -> AsyncGenerator[RunEvent, None]:
        """Stream ``req`` from its session's actor: ``step`` and ``delta`` events, then ``done``.

        An actor that dies mid-stream is sent the run again, as :meth:`run` does; the next incarnation
        resumes it from its checkpoint (a step the checkpoint had not kept runs, and streams, again).
        Closing the stream early cancels the run in the actor.

        Raises:
            SessionActorDiedError: The session's actors kept dying; the run stays resumable.
        """
        last: BaseException | None = None
        for attempt in range(_DIRECTORY_ATTEMPTS):
            handle = await self._handle(req.session_id)
            # max_task_retries=0: this loop re-sends a stream, not Ray (see the module's docstring).
            stream = handle.run_events.options(num_returns="streaming", max_task_retries=0).remote(req)
            settled = False
            try:
                async for ref in stream:
                    yield await ref
                settled = True
                return
            except _PROCESS_GONE as exc:
                settled, last = True, exc
                self._handles.pop(req.session_id, None)
            except Exception as exc:
                settled = True
                raise unwrap_remote_error(exc) from None
            finally:
                if not settled:
                    ray.cancel(stream)  # the consumer went away: stop the run in the actor
            await asyncio.sleep(_backoff(attempt))
        raise self._died(req, last)

    def _died(self, req: RunInput, last: BaseException | None) -> SessionActorDiedError:
        return SessionActorDiedError(
            f"the actor of session {req.session_id!r} of agent {self._agent!r} kept dying "
            f"({type(last).__name__}); run {req.run_id} is checkpointed and resumes when sent again",
            extra={"run_id": req.run_id, "session_id": req.session_id},
        )
