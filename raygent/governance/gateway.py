"""The ToolGateway: where every tool call an agent makes is checked and executed.

It runs in its own process (a Serve deployment), so an agent cannot skip it or reach a tool's code or
credentials directly. This terminal stage checks that the calling identity is the agent's own and that
the agent's role grants the tool, validates the model's arguments against the tool's schema, then runs
the tool. Governance interceptors (RBAC, policy, approvals, budgets) wrap it in later issues; tracing and
audit wrap it now.

Tool failures come back as error *results* (``is_error=True``) rather than exceptions: the model sees
what went wrong and can answer the user, and the run's record keeps the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from raygent.core.clock import Clock
from raygent.core.config import AgentToolSpec, Fleet, PythonToolSpec
from raygent.core.errors import DeadlineExceededError, ForbiddenError, RaygentError, ToolError
from raygent.core.ids import new_id
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolStage
from raygent.core.messages import Usage
from raygent.core.runs import AgentInvoker, RunInput
from raygent.governance.errors import ToolArgumentsError, ToolNotGrantedError, UnknownToolError
from raygent.integrations.context import ToolContext
from raygent.integrations.python_tool import PythonToolLoader, run_python_tool

__all__ = ["ToolGateway", "error_result"]

_MAX_ERROR_CHARS = 500


def error_result(exc: BaseException) -> dict[str, Any]:
    """The JSON a model sees for a failed call: a plain sentence, never a traceback."""
    if isinstance(exc, RaygentError):
        return {"error": exc.detail[:_MAX_ERROR_CHARS], "error_type": exc.slug}
    # A tool's own exception: its message is written for people by the tool's author.
    return {"error": f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS], "error_type": "tool-failed"}


class ToolGateway(ToolStage):
    """Terminal tool stage. One instance per gateway replica.

    Args:
        fleet: The fleet whose tools and agents this gateway serves.
        invoker: Runs another agent for ``agent`` tools (delegation); None disables delegation.
        clock: Time source for latency and deadlines.
    """

    def __init__(self, fleet: Fleet, *, invoker: AgentInvoker | None, clock: Clock) -> None:
        self._fleet = fleet
        self._invoker = invoker
        self._clock = clock
        self._loader = PythonToolLoader(Path(fleet.base_dir))
        self._validators = {name: Draft202012Validator(t.parameters) for name, t in fleet.tools.items()}

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        started = self._clock.monotonic()
        usage, cost = Usage(), 0.0
        try:
            result, usage, cost, is_error = await self._execute(inp)
        except Exception as exc:
            result, is_error = error_result(exc), True
        return ToolCallOutput(
            call_id=inp.call.id,
            name=inp.call.name,
            result=result,
            is_error=is_error,
            latency_s=self._clock.monotonic() - started,
            usage=usage,
            cost_usd=cost,
        )

    def _authorize(self, inp: ToolCallInput) -> None:
        ctx, name = inp.ctx, inp.call.name
        agent = self._fleet.agents.get(ctx.agent)
        if agent is None or agent.identity != ctx.identity:
            raise ForbiddenError(f"identity {ctx.identity!r} is not the identity of agent {ctx.agent!r}")
        if name not in self._fleet.tools:
            raise UnknownToolError(f"there is no tool named {name!r}")
        if name not in agent.tools:
            raise ToolNotGrantedError(f"agent {ctx.agent!r} is not granted the tool {name!r}")
        errors = sorted(self._validators[name].iter_errors(inp.call.arguments), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "arguments"
            raise ToolArgumentsError(f"invalid arguments for {name!r} at {where}: {first.message}")

    def _remaining_s(self, deadline_ts: float | None, limit_s: float) -> float:
        if deadline_ts is None:
            return limit_s
        remaining = deadline_ts - self._clock.now()
        if remaining <= 0:
            raise DeadlineExceededError("the run's deadline passed before the tool could run")
        return min(limit_s, remaining)

    async def _execute(self, inp: ToolCallInput) -> tuple[Any, Usage, float, bool]:
        self._authorize(inp)
        ctx, call = inp.ctx, inp.call
        spec = self._fleet.tools[call.name]
        timeout_s = self._remaining_s(ctx.deadline_ts, spec.timeout_s)
        if isinstance(spec, PythonToolSpec):
            tool_ctx = ToolContext(
                tool_call_id=call.id,
                idempotency_key=call.id,
                run_id=ctx.run_id,
                session_id=ctx.session_id,
                agent=ctx.agent,
                identity=ctx.identity,
                state_dir=self._fleet.state_path("."),
                deadline_ts=ctx.deadline_ts,
            )
            fn = self._loader.load(spec.entrypoint)
            result = await run_python_tool(fn, tool_ctx, call.arguments, timeout_s=timeout_s)
            return result, Usage(), 0.0, False
        assert isinstance(spec, AgentToolSpec)  # the union has two members; narrowing for the type checker
        return await self._delegate(inp, spec)

    async def _delegate(self, inp: ToolCallInput, spec: AgentToolSpec) -> tuple[Any, Usage, float, bool]:
        ctx = inp.ctx
        if self._invoker is None:
            raise ToolError("delegation is not available in this gateway")
        chain = (*ctx.caller_chain, ctx.agent)
        run = RunInput(
            run_id=new_id("run"),
            agent=spec.agent,
            input=str(inp.call.arguments.get("input", "")),
            # The callee keeps its own context per conversation of the caller.
            session_id=f"{ctx.session_id}/{spec.agent}",
            deadline_ts=ctx.deadline_ts
            if ctx.deadline_ts is not None
            else self._clock.now() + spec.timeout_s,
            traceparent=ctx.traceparent,
            caller_chain=chain,
        )
        out = await self._invoker.invoke(run)
        usage = Usage(out.input_tokens, out.output_tokens)
        if out.status != "completed":
            # Still an error result, but the callee's spend is carried up to the caller's run.
            detail = (out.error or {}).get("detail", out.status)
            failed = ToolError(f"agent {spec.agent!r} did not complete: {detail}")
            return error_result(failed), usage, out.cost_usd, True
        return {"agent": spec.agent, "run_id": out.run_id, "answer": out.output}, usage, out.cost_usd, False
