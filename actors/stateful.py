"""Stateful agents: one live session's state, checkpointed after every step, and the loop that runs it.

A stateful agent keeps its working memory in the process that serves the session instead of loading it
from the store on every run. The state is a dict with three parts:

- ``messages``: the session's conversation (kept to the agent's ``max_history_messages``);
- ``memory``: free-form working memory (JSON) an agent may keep across runs;
- ``runs``: the progress of runs in flight (:class:`~raygent.actors.checkpoint.RunProgress`).

:class:`SessionRuntime` is the step loop's :class:`~raygent.actors.checkpoint.RunJournal`: every
progress report becomes a checkpoint (delta-encoded once the state is large), so a process that dies at
any point is replaced by one that restores the last checkpoint and resumes the run where it stopped.
:class:`SessionHost` pairs a runtime with its :class:`~raygent.actors.steploop.AgentLoop`; it is what a
Ray session actor holds (:mod:`raygent.actors.session_actor`) and what :class:`LocalStatefulAgent` keeps
per session when a fleet runs in one process. Both run a run whole (``run``) or streamed
(``run_events``: the same run, with its steps and token deltas as events).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

from opentelemetry.trace import Tracer

from raygent.actors.checkpoint import Checkpointer, CheckpointStats, RunProgress
from raygent.actors.steploop import AgentLoop, RunHooks, trim_history
from raygent.actors.streaming import stream_run
from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.faults import FaultHook
from raygent.core.interceptors import ModelStage, ToolStage
from raygent.core.runs import RunEvent, RunInput, RunOutput
from raygent.core.store.base import Store
from raygent.router.streaming import StreamingModel

__all__ = ["LocalStatefulAgent", "SessionHost", "SessionRuntime", "checkpoint_key"]

_BEFORE_WRITE = {"model": "after_model", "step": "after_tool", "answered": "after_model"}


def checkpoint_key(agent: str, session_id: str) -> str:
    return f"{agent}/{session_id}"


def _empty_state() -> dict[str, Any]:
    return {"messages": [], "memory": {}, "runs": {}}


class SessionRuntime:
    """The state of one session of one stateful agent, and the journal its step loop reports to.

    Build it with :meth:`restore`. Every change goes through :meth:`_commit`: the new state is checkpointed
    first and only then becomes the state, so a write that fails (too large, store down, a newer
    incarnation) leaves memory and store in agreement.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        state: dict[str, Any],
        *,
        max_history_messages: int,
        faults: FaultHook | None = None,
    ) -> None:
        self._checkpointer = checkpointer
        self._state = state
        self._max_history = max_history_messages
        self._faults = faults
        self.last_stats: CheckpointStats | None = None

    @classmethod
    async def restore(
        cls,
        checkpointer: Checkpointer,
        *,
        max_history_messages: int,
        faults: FaultHook | None = None,
    ) -> SessionRuntime:
        """The session as last checkpointed (empty when it never was)."""
        loaded = await checkpointer.load()
        state = _empty_state()
        if loaded is not None:
            state.update(loaded)
        return cls(checkpointer, state, max_history_messages=max_history_messages, faults=faults)

    @property
    def state(self) -> Mapping[str, Any]:
        """The current state (read-only view: change it through the journal or :meth:`set_memory`)."""
        return self._state

    @property
    def version(self) -> int:
        return self._checkpointer.version

    def pending_runs(self) -> list[str]:
        """Runs a crash interrupted (their progress is in the state); they resume when retried."""
        return list(self._state["runs"])

    async def _commit(self, state: dict[str, Any]) -> None:
        # A run cancelled during a write (its client went away) lets the write finish first: cut short,
        # the store could hold a version this process never learnt of, and every later write of the
        # session would be refused as a conflict. The cancellation is raised once memory and store agree.
        save = asyncio.ensure_future(self._checkpointer.save(state))
        cancelled = False
        while not save.done():
            try:
                await asyncio.wait({save})
            except asyncio.CancelledError:
                cancelled = True
        error = save.exception()
        if error is None:
            self.last_stats, self._state = save.result(), state
        if cancelled:
            raise asyncio.CancelledError
        if error is not None:
            raise error

    async def set_memory(self, memory: dict[str, Any]) -> None:
        """Replace the working memory (checkpointed; StateTooLargeError past the agent's limit)."""
        await self._commit({**self._state, "memory": memory})

    # ----- RunJournal --------------------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        return list(self._state["messages"])

    async def resume(self, run_id: str) -> RunProgress | None:
        saved = self._state["runs"].get(run_id)
        return None if saved is None else RunProgress.from_dict(saved)

    async def record(self, progress: RunProgress) -> None:
        self._fault(_BEFORE_WRITE[progress.phase], progress)
        runs = {**self._state["runs"], progress.run_id: progress.to_dict()}
        await self._commit({**self._state, "runs": runs})
        self._fault("after_checkpoint", progress)

    async def finish(self, run_id: str) -> None:
        runs = dict(self._state["runs"])
        progress = runs.pop(run_id, None)
        if progress is None:
            return
        messages = trim_history([*self._state["messages"], *progress["messages"]], self._max_history)
        await self._commit({**self._state, "messages": messages, "runs": runs})

    async def abandon(self, run_id: str, *, keep: bool) -> None:
        if keep or run_id not in self._state["runs"]:
            return
        runs = {k: v for k, v in self._state["runs"].items() if k != run_id}
        await self._commit({**self._state, "runs": runs})

    def _fault(self, point: str, progress: RunProgress) -> None:
        if self._faults is not None:
            self._faults.at(point, run_id=progress.run_id, step=progress.step)


class SessionHost:
    """One live session: its runtime and a step loop journaling to it; runs one at a time.

    Args:
        fleet: The loaded fleet.
        agent: A stateful agent of the fleet.
        session_id: The session this host serves.
        store: Checkpoints, runs and audit.
        model: Where model calls go.
        tools: Where tool calls go.
        tracer: Tracer for run spans.
        clock: Time source.
        faults: Chaos tests only.
        streaming: Builds the model stage of a streamed run from where its text deltas go; without
            it a streamed run sends step events but no deltas.
    """

    def __init__(
        self,
        fleet: Fleet,
        agent: str,
        session_id: str,
        *,
        store: Store,
        model: ModelStage,
        tools: ToolStage,
        tracer: Tracer,
        clock: Clock,
        faults: FaultHook | None = None,
        streaming: StreamingModel | None = None,
    ) -> None:
        spec = fleet.agents[agent]
        self.session_id = session_id
        self._fleet, self._agent, self._store = fleet, agent, store
        self._model, self._tools, self._tracer, self._clock = model, tools, tracer, clock
        self._faults = faults
        self._streaming = streaming
        self._checkpointer = Checkpointer(
            store, checkpoint_key(agent, session_id), max_state_bytes=spec.max_state_bytes
        )
        self._max_history = spec.max_history_messages
        self._lock = asyncio.Lock()
        self._runtime: SessionRuntime | None = None
        self._loop: AgentLoop | None = None
        self.inflight = 0
        self.last_used = clock.monotonic()

    async def ensure(self) -> SessionRuntime:
        """Restore the session from its last checkpoint (once)."""
        if self._runtime is None:
            self._runtime = await SessionRuntime.restore(
                self._checkpointer, max_history_messages=self._max_history, faults=self._faults
            )
            self._loop = AgentLoop(
                self._fleet,
                self._agent,
                store=self._store,
                model=self._model,
                tools=self._tools,
                tracer=self._tracer,
                clock=self._clock,
                journal=self._runtime,
            )
        return self._runtime

    async def run(self, req: RunInput, hooks: RunHooks | None = None) -> RunOutput:
        """Run (or resume) ``req``; runs of one session are serialised, as they share its state."""
        self.inflight += 1
        try:
            async with self._lock:
                await self.ensure()
                assert self._loop is not None  # set by ensure()
                return await self._loop.run(req, hooks)
        finally:
            self.inflight -= 1
            self.last_used = self._clock.monotonic()

    async def run_events(self, req: RunInput) -> AsyncGenerator[RunEvent, None]:
        """:meth:`run` as a stream: ``step`` and ``delta`` events as they happen, then ``done``.

        The same run as :meth:`run` (same lock, loop and checkpoints); closing the stream early
        cancels it, and the run is recorded as cancelled.
        """
        # In flight from the first step of the stream, before the run's own task starts: an idle
        # release checks between the two and must not take the session now.
        self.inflight += 1
        try:
            events = stream_run(lambda hooks: self.run(req, hooks), streaming=self._streaming)
            async with aclosing(events):
                async for event in events:
                    yield event
        finally:
            self.inflight -= 1
            self.last_used = self._clock.monotonic()

    def idle_for_s(self) -> float:
        return 0.0 if self.inflight else self._clock.monotonic() - self.last_used


class LocalStatefulAgent:
    """A stateful agent served in this process (unit tests, :class:`InProcessFleet`): a host per session.

    :meth:`release` forgets a session's live state, as an idle release or a crash would; the next run of
    that session restores it from the store. Arguments as for :class:`SessionHost`.
    """

    def __init__(
        self,
        fleet: Fleet,
        agent: str,
        *,
        store: Store,
        model: ModelStage,
        tools: ToolStage,
        tracer: Tracer,
        clock: Clock,
        faults: FaultHook | None = None,
        streaming: StreamingModel | None = None,
    ) -> None:
        self._fleet, self._agent, self._store = fleet, agent, store
        self._model, self._tools, self._tracer, self._clock = model, tools, tracer, clock
        self._faults = faults
        self._streaming = streaming
        self._hosts: dict[str, SessionHost] = {}

    def host(self, session_id: str) -> SessionHost:
        host = self._hosts.get(session_id)
        if host is None:
            host = self._hosts[session_id] = SessionHost(
                self._fleet,
                self._agent,
                session_id,
                store=self._store,
                model=self._model,
                tools=self._tools,
                tracer=self._tracer,
                clock=self._clock,
                faults=self._faults,
                streaming=self._streaming,
            )
        return host

    async def run(self, req: RunInput) -> RunOutput:
        return await self.host(req.session_id).run(req)

    def run_events(self, req: RunInput) -> AsyncGenerator[RunEvent, None]:
        """Stream a run of the session (see :meth:`SessionHost.run_events`)."""
        return self.host(req.session_id).run_events(req)

    def release(self, session_id: str | None = None) -> None:
        """Drop live state (one session, or all); it comes back from the last checkpoint on next use."""
        if session_id is None:
            self._hosts.clear()
        else:
            self._hosts.pop(session_id, None)
