"""The agent step loop: render prompt → model → tool calls → … → answer.

Plain async code with its collaborators passed in, so it runs the same inside a Ray Serve replica and in
a unit test. Model calls go to a :class:`ModelStage` (the router, in another process under Ray) and tool
calls to a :class:`ToolStage` (the gateway, likewise); the loop itself never executes a tool.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from string import Template
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from raygent.actors.checkpoint import RunJournal, RunPhase, RunProgress
from raygent.actors.errors import (
    DelegationCycleError,
    DelegationDepthError,
    InputTooLongError,
    MaxStepsExceededError,
)
from raygent.core.clock import Clock
from raygent.core.config import AgentSpec, Fleet, parse_prompt_ref
from raygent.core.errors import ConflictError, DeadlineExceededError, RaygentError, StoreError
from raygent.core.ids import tool_call_id
from raygent.core.interceptors import CallContext, ModelCallInput, ModelStage, ToolCallInput, ToolStage
from raygent.core.messages import Message, ToolCall, ToolSchema, Usage
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store.base import RunRecord, SessionContext, Store, canonical_json, sha256_hex
from raygent.governance.audit import AuditWriter
from raygent.governance.errors import ApprovalRequiredError
from raygent.governance.parking import ParkingLot
from raygent.integrations.errors import ToolPendingError
from raygent.telemetry.propagation import context_from_traceparent, trace_id_hex, traceparent_of

__all__ = ["AgentLoop", "RenderedPrompt", "RunHooks", "render_prompt", "tool_schemas", "trim_history"]

_SESSION_WRITE_ATTEMPTS = 12
# A run in one of these states is over: a retried request (a restarted stateful actor) returns it as is.
_SETTLED = frozenset({"completed", "failed", "timed_out", "cancelled", "needs_approval", "waiting"})
# Parked, not over: held for a person's decision, or waiting for a slow backend's reply. A request with
# ``resume=True`` continues such a run from its parked progress (checkpoint).
_PARKED = frozenset({"needs_approval", "waiting"})
_PENDING_SLUG = ToolPendingError.slug


def _output_of(record: RunRecord) -> RunOutput:
    return RunOutput(
        run_id=record.run_id,
        agent=record.agent,
        session_id=record.session_id,
        status=record.status,
        output=record.output,
        steps=record.steps,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cost_usd=record.cost_usd,
        trace_id=record.trace_id,
        error=record.error,
    )


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    prompt_id: str
    version: str
    text: str
    sha256: str


@dataclass(frozen=True, slots=True)
class RunHooks:
    """Optional per-run observers, used for streaming (all default to nothing).

    Attributes:
        on_step: Awaited with each step (model or tool) right after it is recorded on the run.
        model: Model stage for this run instead of the loop's own (e.g. one that streams deltas).
    """

    on_step: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    model: ModelStage | None = None


def render_prompt(fleet: Fleet, agent: str) -> RenderedPrompt:
    """The agent's system prompt at its pinned version; ``$agent`` is the only placeholder filled."""
    spec = fleet.agents[agent]
    prompt_id, version = parse_prompt_ref(spec.prompt)
    text = Template(fleet.prompt_text(spec.prompt)).safe_substitute(agent=agent)
    return RenderedPrompt(prompt_id, version, text, sha256_hex(text))


def tool_schemas(fleet: Fleet, spec: AgentSpec) -> tuple[ToolSchema, ...]:
    return tuple(
        ToolSchema(name=n, description=fleet.tools[n].description, parameters=fleet.tools[n].parameters)
        for n in spec.tools
    )


def trim_history(messages: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Keep at most ``limit`` messages, cutting only at a user turn so no tool result loses its call."""
    if len(messages) <= limit:
        return messages
    start = len(messages) - limit
    while start < len(messages) and messages[start].get("role") != "user":
        start += 1
    return messages[start:]


class AgentLoop:
    """Runs one agent role. One instance per replica; holds no per-session state (stateless agent).

    Args:
        fleet: The loaded fleet.
        agent: The role this loop runs.
        store: Session context, runs and audit.
        model: Where model calls go (the router's interceptor chain).
        tools: Where tool calls go (the gateway's interceptor chain).
        tracer: Tracer for the run span.
        clock: Time source.
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
        journal: RunJournal | None = None,
    ) -> None:
        self._fleet = fleet
        # Stateful agents only: the session's checkpointed state (history, progress of runs in flight).
        self._journal = journal
        # Stateless agents of a governed fleet, or of one with ``async_mode: park`` tools: a run held for
        # approval or waiting for a reply parks its last progress here to resume.
        self._parking = ParkingLot.for_fleet(fleet, clock) if journal is None else None
        self._progress: dict[str, RunProgress] = {}
        self._agent = agent
        self._spec = fleet.agents[agent]
        self._store = store
        self._model = model
        self._tools = tools
        self._tracer = tracer
        self._clock = clock
        self._audit = AuditWriter(store, clock)
        self._prompt = render_prompt(fleet, agent)
        self._tool_schemas = tool_schemas(fleet, self._spec)

    async def run(self, req: RunInput, hooks: RunHooks | None = None) -> RunOutput:
        """Execute a run to completion or failure; never raises for a run-level failure.

        Cancelling the task that runs this (a client went away, ``POST /v1/runs/{id}/cancel``) records
        the run as ``cancelled`` before the cancellation propagates.
        """
        if self._journal is not None or req.resume:
            stored = await self._store.get_run(req.run_id)
            parked = req.resume and stored is not None and stored.status in _PARKED
            if stored is not None and stored.status in _SETTLED and not parked:
                if self._journal is not None:
                    # A crash may have come between settling the run and tidying the session.
                    await self._settle_journal(stored)
                return _output_of(stored)
        now = self._clock.now()
        record = RunRecord(
            run_id=req.run_id,
            agent=self._agent,
            session_id=req.session_id,
            status="running",
            input=req.input,
            created_at=now,
            updated_at=now,
            caller_chain=list(req.caller_chain),
            identity=self._spec.identity,
            requester=req.requester,
            end_user=req.end_user,
        )
        with self._tracer.start_as_current_span(
            f"invoke_agent {self._agent}",
            context=context_from_traceparent(req.traceparent),
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": self._agent,
                "raygent.agent": self._agent,
                "raygent.run_id": req.run_id,
                "raygent.session_id": req.session_id,
                "raygent.identity": self._spec.identity,
                "raygent.caller_chain": ",".join(req.caller_chain),
                "raygent.prompt.id": self._prompt.prompt_id,
                "raygent.prompt.version": self._prompt.version,
                "raygent.prompt.sha256": self._prompt.sha256,
            },
        ) as span:
            traceparent = traceparent_of(span)
            record.trace_id = trace_id_hex(traceparent)
            ctx = CallContext(
                run_id=req.run_id,
                session_id=req.session_id,
                agent=self._agent,
                identity=self._spec.identity,
                traceparent=traceparent,
                caller_chain=req.caller_chain,
                deadline_ts=min(req.deadline_ts, now + self._spec.deadline_s),
                tier=self._spec.tier,
                prompt_id=self._prompt.prompt_id,
                prompt_version=self._prompt.version,
                prompt_sha256=self._prompt.sha256,
                requester=req.requester,
                end_user=req.end_user,
            )
            resumed = await self._open_run(req, record)
            try:
                await self._loop(ctx, req, record, hooks or RunHooks(), resumed)
            except asyncio.CancelledError:
                # Shielded: a second cancel must not leave the run looking "running" forever.
                await asyncio.shield(self._cancelled(ctx, record))
                span.set_attribute("raygent.status", record.status)
                raise
            except Exception as exc:
                await self._fail(ctx, record, exc)
                if record.status not in _PARKED:  # parked for a person or a reply: not failed
                    span.set_status(Status(StatusCode.ERROR, record.status))
                span.set_attribute("error.type", type(exc).__name__)
            span.set_attribute("raygent.status", record.status)
            span.set_attribute("raygent.cost.usd", record.cost_usd)
            span.set_attribute("gen_ai.usage.input_tokens", record.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", record.output_tokens)
        return RunOutput(
            run_id=record.run_id,
            agent=record.agent,
            session_id=record.session_id,
            status=record.status,
            output=record.output,
            steps=record.steps,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            cost_usd=record.cost_usd,
            trace_id=record.trace_id,
            error=record.error,
        )

    def _check_delegation(self, req: RunInput) -> None:
        if self._agent in req.caller_chain:
            chain = " -> ".join((*req.caller_chain, self._agent))
            raise DelegationCycleError(f"delegation cycle: {chain}")
        if len(req.caller_chain) > self._spec.max_delegation_depth:
            raise DelegationDepthError(
                f"delegation chain {' -> '.join(req.caller_chain)} is deeper than "
                f"{self._spec.max_delegation_depth} for agent {self._agent!r}"
            )

    def _remaining_s(self, ctx: CallContext) -> float:
        assert ctx.deadline_ts is not None  # always set by run()
        remaining = ctx.deadline_ts - self._clock.now()
        if remaining <= 0:
            raise DeadlineExceededError(f"agent {self._agent!r} ran past its deadline")
        return remaining

    async def _settle_journal(self, stored: RunRecord) -> None:
        assert self._journal is not None  # only called for journaled (stateful) agents
        if stored.status == "completed":
            await self._journal.finish(stored.run_id)
        else:
            await self._journal.abandon(stored.run_id, keep=stored.status in _PARKED)

    async def _open_run(self, req: RunInput, record: RunRecord) -> RunProgress | None:
        """Create the run; a stateful agent's retried run (after a crash) picks up its checkpoint."""
        if self._journal is None:
            if req.resume and self._parking is not None and await self._store.get_run(req.run_id):
                return await self._unpark(req, record)
            await self._store.create_run(record)
            return None
        stored = await self._store.get_run(req.run_id)
        if stored is None:
            await self._store.create_run(record)
            return None
        record.created_at = stored.created_at
        resumed = await self._journal.resume(req.run_id)
        if resumed is not None:
            resumed.restore(record)
        return resumed

    async def _unpark(self, req: RunInput, record: RunRecord) -> RunProgress:
        """The parked progress of a stateless run that waited for approval or for a pending reply
        (claimed: one resumer wins)."""
        assert self._parking is not None  # only called when parking is set
        stored = await self._parking.claim(req.run_id)
        if stored is None:
            raise ConflictError(f"run {req.run_id!r} is not parked; it was resumed already or never held")
        existing = await self._store.get_run(req.run_id)
        if existing is not None:
            record.created_at = existing.created_at
        progress = RunProgress.from_dict(stored)
        progress.restore(record)
        self._progress[req.run_id] = progress  # held again on resume: parks the same progress again
        return progress

    async def _checkpoint(
        self,
        record: RunRecord,
        step: int,
        phase: RunPhase,
        messages: list[Message],
        answer: str | None = None,
    ) -> None:
        if self._journal is not None:
            dicts = [m.to_dict() for m in messages]
            progress = RunProgress.of(record, step=step, phase=phase, messages=dicts, answer=answer)
            await self._journal.record(progress)
        elif self._parking is not None:
            # Kept in memory only; written (parked) just if a tool call of this step is held.
            dicts = [m.to_dict() for m in messages]
            self._progress[record.run_id] = RunProgress.of(record, step=step, phase=phase, messages=dicts)

    async def _resume(
        self,
        ctx: CallContext,
        record: RunRecord,
        progress: RunProgress,
        history: list[Message],
        new_messages: list[Message],
        hooks: RunHooks,
    ) -> int | None:
        """Finish what the checkpoint left open; returns the next step, or None when the run is done."""
        step_ctx = ctx.child(step=progress.step)
        if progress.phase == "answered":
            await self._finish(step_ctx, record, history, new_messages, progress.answer or "")
            return None
        if progress.phase == "model":
            # The model's answer is kept, so the same calls (same ids) run again; the effect ledger
            # returns the recorded outcome of any side effect that already happened.
            for tool_call in new_messages[-1].tool_calls:
                new_messages.append(await self._call_tool(step_ctx, record, tool_call))
                if hooks.on_step is not None:
                    await hooks.on_step(record.steps[-1])
            await self._checkpoint(record, progress.step, "step", new_messages)
        return progress.step + 1

    async def _history(self, req: RunInput) -> list[Message]:
        if self._journal is not None:
            return [Message.from_dict(m) for m in self._journal.history()]
        session = await self._store.get_session(req.session_id)
        return [Message.from_dict(m) for m in (session.messages if session else [])]

    async def _loop(
        self,
        ctx: CallContext,
        req: RunInput,
        record: RunRecord,
        hooks: RunHooks,
        resumed: RunProgress | None = None,
    ) -> None:
        self._check_delegation(req)
        model = hooks.model or self._model
        if len(req.input) > self._spec.max_input_chars:
            raise InputTooLongError(
                f"input has {len(req.input)} characters; "
                f"agent {self._agent!r} accepts {self._spec.max_input_chars}"
            )
        history = await self._history(req)
        user = Message(role="user", content=req.input)
        new_messages: list[Message] = [user]
        await self._audit.write(
            ctx,
            "prompt",
            {
                "prompt_id": self._prompt.prompt_id,
                "prompt_version": self._prompt.version,
                "prompt_sha256": self._prompt.sha256,
                "input": req.input,
                "history_messages": len(history),
                # What `raygent replay` needs to rebuild the model's input exactly (raygent.cli.replay).
                "history": [m.to_dict() for m in history],
                "history_sha256": sha256_hex(canonical_json([m.to_dict() for m in history])),
            },
        )
        system = Message(role="system", content=self._prompt.text)
        first_step = 1
        if resumed is not None:
            new_messages = [Message.from_dict(m) for m in resumed.messages]
            next_step = await self._resume(ctx, record, resumed, history, new_messages, hooks)
            if next_step is None:
                return
            first_step = next_step
        for step in range(first_step, self._spec.max_steps + 1):
            step_ctx = ctx.child(step=step)
            remaining = self._remaining_s(step_ctx)
            call = ModelCallInput(
                ctx=step_ctx,
                messages=(system, *history, *new_messages),
                tools=self._tool_schemas,
                latency_budget_ms=req.latency_budget_ms,
            )
            try:
                out = await asyncio.wait_for(model.call_model(call), remaining)
            except TimeoutError:
                raise DeadlineExceededError(f"agent {self._agent!r} ran past its deadline") from None
            self._account(record, out.usage, out.cost_usd)
            record.steps.append(
                {
                    "step": step,
                    "kind": "model",
                    "backend": out.backend,
                    "route_reason": out.route_reason,
                    "input_tokens": out.usage.input_tokens,
                    "output_tokens": out.usage.output_tokens,
                    "cost_usd": round(out.cost_usd, 8),
                    "tool_calls": [c.name for c in out.tool_calls],
                }
            )
            if hooks.on_step is not None:
                await hooks.on_step(record.steps[-1])
            if not out.tool_calls:
                new_messages.append(Message(role="assistant", content=out.text))
                await self._finish(step_ctx, record, history, new_messages, out.text)
                return
            # Ids are assigned here, deterministically, whatever the backend called them.
            calls = tuple(
                ToolCall(id=tool_call_id(ctx.run_id, step, i), name=c.name, arguments=c.arguments)
                for i, c in enumerate(out.tool_calls)
            )
            new_messages.append(Message(role="assistant", content=out.text, tool_calls=calls))
            await self._checkpoint(record, step, "model", new_messages)
            for tool_call in calls:
                new_messages.append(await self._call_tool(step_ctx, record, tool_call))
                if hooks.on_step is not None:
                    await hooks.on_step(record.steps[-1])
            await self._checkpoint(record, step, "step", new_messages)
        raise MaxStepsExceededError(
            f"agent {self._agent!r} did not answer within {self._spec.max_steps} steps"
        )

    async def _call_tool(self, ctx: CallContext, record: RunRecord, call: ToolCall) -> Message:
        try:
            out = await asyncio.wait_for(
                self._tools.call_tool(ToolCallInput(ctx, call)), self._remaining_s(ctx)
            )
        except TimeoutError:
            raise DeadlineExceededError(f"agent {self._agent!r} ran past its deadline") from None
        self._account(record, out.usage, out.cost_usd)
        result = out.result if isinstance(out.result, dict) else {}
        pending = out.is_error and result.get("error_type") == _PENDING_SLUG
        record.steps.append(
            {
                "step": ctx.step,
                "kind": "tool",
                "tool": call.name,
                "call_id": call.id,
                "is_error": out.is_error and not pending,
                "latency_ms": round(out.latency_s * 1000, 3),
                "cost_usd": round(out.cost_usd, 8),
                **({"pending": True, "correlation_id": result.get("correlation_id")} if pending else {}),
            }
        )
        if pending:
            # The backend has the request and its reply will be recorded: park the run (progress as of
            # this step's model answer) instead of showing the model a non-answer. The resumed run
            # repeats this call with the same id, and the gateway answers it from the recorded reply.
            raise ToolPendingError(
                f"tool {call.name!r} is waiting for its reply; the run resumes when it arrives",
                extra={"tool": call.name, "call_id": call.id, "correlation_id": result.get("correlation_id")},
            )
        return Message(role="tool", content=canonical_json(out.result), tool_call_id=call.id, name=call.name)

    @staticmethod
    def _account(record: RunRecord, usage: Usage, cost_usd: float) -> None:
        record.input_tokens += usage.input_tokens
        record.output_tokens += usage.output_tokens
        record.cost_usd += cost_usd

    async def _finish(
        self,
        ctx: CallContext,
        record: RunRecord,
        history: list[Message],
        new_messages: list[Message],
        answer: str,
    ) -> None:
        self._progress.pop(record.run_id, None)
        if self._journal is None:
            await self._save_session(record.session_id, [m.to_dict() for m in new_messages])
        else:
            # The answer is checkpointed before the run is marked completed; the conversation takes
            # the run's messages only after (finish), so a crash in between repeats no model call.
            await self._checkpoint(record, ctx.step, "answered", new_messages, answer)
        await self._audit.write(ctx, "action", {"action": "answer", "text": answer})
        record.status = "completed"
        record.output = answer
        record.updated_at = self._clock.now()
        await self._store.save_run(record)
        if self._journal is not None:
            await self._journal.finish(record.run_id)

    async def _save_session(self, session_id: str, appended: list[dict[str, Any]]) -> None:
        """Append this run's turn to the session, retrying on a concurrent writer (compare-and-set)."""
        for attempt in range(_SESSION_WRITE_ATTEMPTS):
            current = await self._store.get_session(session_id)
            base = current or SessionContext(session_id=session_id)
            messages = trim_history([*base.messages, *appended], self._spec.max_history_messages)
            updated = SessionContext(session_id, messages, base.version, self._clock.now())
            try:
                await self._store.put_session(updated, expected_version=base.version)
                return
            except ConflictError:
                # Jittered backoff so concurrent turns on one session interleave instead of colliding again.
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise ConflictError(f"session {session_id!r} is being changed by too many runs at once; try again")

    async def _cancelled(self, ctx: CallContext, record: RunRecord) -> None:
        self._progress.pop(record.run_id, None)
        record.status = "cancelled"
        record.error = {
            "type": "https://raygent.dev/problems/cancelled",
            "title": "Run cancelled",
            "status": 409,
            "detail": "the run was cancelled before it finished",
            "instance": f"/v1/runs/{record.run_id}",
        }
        record.updated_at = self._clock.now()
        await self._audit.write(
            ctx, "error", {"stage": "run", "error_type": "cancelled", "detail": record.error["detail"]}
        )
        await self._store.save_run(record)
        if self._journal is not None:
            # Settled: its progress has no use in the session's state (a re-sent run returns as is).
            await self._journal.abandon(record.run_id, keep=False)

    async def _fail(self, ctx: CallContext, record: RunRecord, exc: Exception) -> None:
        if self._journal is not None and isinstance(exc, StoreError) and exc.retryable:
            # The store is unreachable (restarting): the caller gets this clear error, and the run is not
            # marked failed, so sending it again resumes it from its last checkpoint.
            raise exc
        error = exc if isinstance(exc, RaygentError) else RaygentError("internal error in the agent")
        record.status = "timed_out" if isinstance(error, DeadlineExceededError) else "failed"
        if isinstance(error, ApprovalRequiredError):
            # Parked, not failed: the checkpoint stays so the run can resume once a person decides.
            record.status = "needs_approval"
        elif isinstance(error, ToolPendingError):
            # Parked on a slow backend: resumed by the reply resumer when the reply is recorded.
            record.status = "waiting"
        record.error = error.to_problem(instance=f"/v1/runs/{record.run_id}")
        record.updated_at = self._clock.now()
        await self._audit.write(
            ctx, "error", {"stage": "run", "error_type": error.slug, "detail": error.detail}
        )
        progress = self._progress.pop(record.run_id, None)
        if self._parking is not None and progress is not None and record.status in _PARKED:
            await self._parking.park(record.run_id, self._agent, progress.to_dict())
        await self._store.save_run(record)
        if self._journal is not None:
            await self._journal.abandon(record.run_id, keep=record.status in _PARKED)
