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
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolStage
from raygent.core.messages import Usage
from raygent.core.runs import AgentInvoker, RunInput
from raygent.governance.errors import (
    ApprovalRequiredError,
    ToolArgumentsError,
    ToolNotGrantedError,
    UnknownToolError,
)
from raygent.integrations.context import ToolContext
from raygent.integrations.credentials import Credentials
from raygent.integrations.errors import ToolPendingError
from raygent.integrations.executor import ToolExecutor, build_executors
from raygent.integrations.http_tool import build_http_executors
from raygent.integrations.python_tool import PythonToolLoader, run_python_tool

__all__ = ["ToolGateway", "delegated_run_id", "error_result"]

_MAX_ERROR_CHARS = 500


def delegated_run_id(parent_run_id: str, call_id: str) -> str:
    """The run id of the agent a tool call delegates to: the parent's id extended by the call's step and
    index (``run_x-s2-c0``), so the root run of any delegated run is the part before the first dash."""
    suffix = call_id[len(parent_run_id) :] if call_id.startswith(parent_run_id + ":") else ":" + call_id
    return parent_run_id + suffix.replace(":", "-")


def error_result(exc: BaseException) -> dict[str, Any]:
    """The JSON a model sees for a failed call: a plain sentence, never a traceback."""
    if isinstance(exc, ToolPendingError):
        # Still in flight: the correlation id is what a parked run resumes by.
        correlation_id = exc.extra.get("correlation_id")
        return {"error": exc.detail, "error_type": exc.slug, "correlation_id": correlation_id}
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
        credentials: Secrets, OAuth2 tokens and revocation for http tools (default: built from the fleet).
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        invoker: AgentInvoker | None,
        clock: Clock,
        credentials: Credentials | None = None,
    ) -> None:
        self._fleet = fleet
        self._invoker = invoker
        self._clock = clock
        self._loader = PythonToolLoader(Path(fleet.base_dir))
        self._validators = {name: Draft202012Validator(t.parameters) for name, t in fleet.tools.items()}
        # mq, soap and terminal tools: one executor each, by tool name (python and agent are built in).
        self._executors = build_executors(fleet, clock=clock)
        # http tools (issue 9): credentials are resolved here, in the gateway, at call time; the egress
        # guard is checked by the executor before a byte leaves. (Imported here: egress imports refusal,
        # which imports this module.)
        from raygent.governance.egress import EgressGuard

        self.credentials = credentials or Credentials(fleet, clock=clock)
        guard = EgressGuard(fleet)
        self._executors.update(
            build_http_executors(fleet, credentials=self.credentials, guard=guard, clock=clock)
        )

    @property
    def fleet(self) -> Fleet:
        return self._fleet

    @property
    def invoker(self) -> AgentInvoker | None:
        return self._invoker

    def executor(self, tool: str) -> ToolExecutor | None:
        """The executor of an ``mq``, ``soap`` or ``terminal`` tool (e.g. to add a status listener)."""
        return self._executors.get(tool)

    async def aclose(self) -> None:
        """Close the executors' connections (brokers, sessions)."""
        for executor in self._executors.values():
            await executor.aclose()
        await self.credentials.aclose()

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        started = self._clock.monotonic()
        usage, cost = Usage(), 0.0
        try:
            result, usage, cost, is_error = await self._execute(inp)
        except ApprovalRequiredError:
            raise  # a delegated run parked for approval: the caller's run parks too
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
        if isinstance(spec, AgentToolSpec):
            return await self._delegate(inp, spec)
        tool_ctx = ToolContext(
            tool_call_id=call.id,
            idempotency_key=call.id,
            run_id=ctx.run_id,
            session_id=ctx.session_id,
            agent=ctx.agent,
            identity=ctx.identity,
            state_dir=self._fleet.state_path("."),
            deadline_ts=ctx.deadline_ts,
            traceparent=ctx.traceparent,
            end_user=ctx.end_user,
        )
        executor = self._executors.get(call.name)
        if executor is not None:
            return await executor.call(tool_ctx, call.arguments, timeout_s=timeout_s), Usage(), 0.0, False
        if isinstance(spec, PythonToolSpec):
            fn = self._loader.load(spec.entrypoint)
            result = await run_python_tool(fn, tool_ctx, call.arguments, timeout_s=timeout_s)
            return result, Usage(), 0.0, False
        raise ToolError(f"tool {call.name!r} has kind {spec.kind!r}, which this gateway cannot run")

    async def _delegate(self, inp: ToolCallInput, spec: AgentToolSpec) -> tuple[Any, Usage, float, bool]:
        ctx = inp.ctx
        if self._invoker is None:
            raise ToolError("delegation is not available in this gateway")
        chain = (*ctx.caller_chain, ctx.agent)
        run = RunInput(
            run_id=delegated_run_id(ctx.run_id, inp.call.id),
            agent=spec.agent,
            input=str(inp.call.arguments.get("input", "")),
            # The callee keeps its own context per conversation of the caller.
            session_id=f"{ctx.session_id}/{spec.agent}",
            deadline_ts=ctx.deadline_ts
            if ctx.deadline_ts is not None
            else self._clock.now() + spec.timeout_s,
            traceparent=ctx.traceparent,
            caller_chain=chain,
            requester=ctx.requester,
            end_user=ctx.end_user,
            # The id is derived from the call's, so a repeated call (a parked run resuming) continues
            # or returns the same delegated run instead of starting a second one.
            resume=True,
        )
        out = await self._invoker.invoke(run)
        if out.status == "needs_approval":
            problem = out.error or {}
            held: dict[str, Any] = {
                k: problem[k] for k in ("approval_id", "approval_url", "tool") if k in problem
            }
            raise ApprovalRequiredError(
                f"agent {spec.agent!r} is waiting for approval",
                extra={**held, "delegated_run_id": out.run_id},
            )
        if out.status == "waiting":
            # The delegated run parked on a slow backend: the caller's run parks too, and the resumer
            # continues the caller, whose repeated call continues this run (same derived id).
            raise ToolPendingError(
                f"agent {spec.agent!r} is waiting for a backend's reply",
                extra={
                    "correlation_id": (out.error or {}).get("correlation_id"),
                    "delegated_run_id": out.run_id,
                },
            )
        usage = Usage(out.input_tokens, out.output_tokens)
        if out.status != "completed":
            # Still an error result, but the callee's spend is carried up to the caller's run.
            detail = (out.error or {}).get("detail", out.status)
            failed = ToolError(f"agent {spec.agent!r} did not complete: {detail}")
            return error_result(failed), usage, out.cost_usd, True
        return {"agent": spec.agent, "run_id": out.run_id, "answer": out.output}, usage, out.cost_usd, False
