"""``raygent replay RUN_ID``: re-execute a recorded run against its recorded model and tool responses.

Today's step loop (today's code, today's prompt from today's fleet file) runs again with the model and
the tools replaced by the audit trail: each model call gets the recorded answer, each tool call the
recorded result. Nothing leaves the process and nothing is random, so the replay is deterministic. At
each step it checks what today's code *asks* against what was recorded:

- ``prompt``: the agent's prompt sha256 (today's fleet file) against the recorded one;
- ``model_input``: the sha256 of the exact messages sent to the model (system prompt, session history
  at the start of the run, the run's turns) against the recorded ``messages_sha256``;
- ``tool_call``: the tool and its arguments against the recorded call with the same (deterministic) id;
- ``answer``: the final answer against the recorded one.

The first mismatch is the step where today's code or prompt diverges from what happened. The replay
continues past input mismatches (the recorded answers keep it on the recorded path) and stops where
today's code asks for a tool call or a model step the recorded run never made. Exit codes: 0 identical,
1 diverged, 2 unknown run or configuration error.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from opentelemetry.trace import NoOpTracer
from rich.table import Table

from raygent.actors.steploop import AgentLoop, render_prompt
from raygent.cli._app import DEFAULT_FLEET, CliExit, FleetOpt, StateOpt, app, fail, load_fleet_or_exit, out
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.errors import NotFoundError, RaygentError
from raygent.core.interceptors import (
    ModelCallInput,
    ModelCallOutput,
    ModelStage,
    ToolCallInput,
    ToolCallOutput,
    ToolStage,
)
from raygent.core.messages import Message, ToolCall, Usage
from raygent.core.runs import RunInput
from raygent.core.store import SQLiteStore, open_store
from raygent.core.store.base import AuditQuery, AuditRecord, SessionContext, Store, canonical_json, sha256_hex

__all__ = ["ReplayCheck", "ReplayReport", "replay_run"]


class ReplayDataError(RaygentError):
    """The run's audit records lack what a replay needs (recorded before replay data was kept)."""

    status = 422
    slug = "replay-data-missing"
    title = "Run cannot be replayed"


class _Stop(Exception):
    """Today's code asked for something the recorded run never did; nothing to answer it with."""


@dataclass(frozen=True, slots=True)
class ReplayCheck:
    step: int
    kind: str  # prompt | model_input | tool_call | answer
    ok: bool
    detail: str
    recorded: str = ""
    today: str = ""


@dataclass(slots=True)
class ReplayReport:
    run_id: str
    agent: str
    checks: list[ReplayCheck] = field(default_factory=list)
    recorded_output: str | None = None
    replayed_output: str | None = None
    stopped: str | None = None  # why the replay could not go on, if it stopped early

    @property
    def first_divergence(self) -> ReplayCheck | None:
        return next((c for c in self.checks if not c.ok), None)

    def to_json(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "run_id": self.run_id,
            "agent": self.agent,
            "identical": first is None,
            "first_divergence": None if first is None else asdict(first),
            "checks": [asdict(c) for c in self.checks],
            "recorded_output": self.recorded_output,
            "replayed_output": self.replayed_output,
            "stopped": self.stopped,
        }


def _messages_sha(messages: tuple[Message, ...]) -> str:
    # Exactly what the audit interceptor hashes (raygent.governance.audit.AuditModelInterceptor).
    return sha256_hex(canonical_json([m.to_dict() for m in messages]))


class _ReplayModel(ModelStage):
    """Answers each model call with the recorded answer of that step; checks the input first."""

    def __init__(self, calls: list[AuditRecord], report: ReplayReport) -> None:
        self._calls = calls
        self._report = report
        self._next = 0

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        step = inp.ctx.step
        if self._next >= len(self._calls):
            raise _Stop(
                f"today's code asks the model for step {step}; the recorded run answered after "
                f"{len(self._calls)} model call(s)"
            )
        rec = self._calls[self._next].payload
        self._next += 1
        today = _messages_sha(inp.messages)
        ok = today == rec["messages_sha256"]
        if ok:
            detail = f"same {len(inp.messages)} messages to the model"
        elif inp.ctx.prompt_sha256 != rec.get("prompt_sha256"):
            detail = (
                f"the prompt changed: recorded {rec.get('prompt_id')}@{rec.get('prompt_version')}, "
                f"today {inp.ctx.prompt_id}@{inp.ctx.prompt_version}"
            )
        else:
            detail = "same prompt, but today's code builds different messages for the model"
        self._report.checks.append(
            ReplayCheck(step, "model_input", ok, detail, rec["messages_sha256"][:16], today[:16])
        )
        output = rec["output"]
        calls = tuple(ToolCall(id="", name=c["name"], arguments=c["arguments"]) for c in output["tool_calls"])
        return ModelCallOutput(
            text=output["text"],
            tool_calls=calls,
            usage=Usage(input_tokens=rec["input_tokens"], output_tokens=rec["output_tokens"]),
            backend=rec["backend"],
            model=rec.get("model", ""),
            finish_reason=rec.get("finish_reason", "stop"),
            cost_usd=rec.get("cost_usd", 0.0),
            latency_s=0.0,
            route_reason="replay",
        )


class _ReplayTools(ToolStage):
    """Answers each tool call with the recorded result of the call with the same id."""

    def __init__(
        self, calls: dict[str, dict[str, Any]], results: dict[str, Any], report: ReplayReport
    ) -> None:
        self._calls = calls
        self._results = results
        self._report = report

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        call, step = inp.call, inp.ctx.step
        today = canonical_json({"tool": call.name, "arguments": call.arguments})
        recorded = self._calls.get(call.id)
        if recorded is None or call.id not in self._results:
            self._report.checks.append(
                ReplayCheck(
                    step,
                    "tool_call",
                    False,
                    f"today's code calls {call.name} ({call.id}); the recorded run made no such call",
                    "",
                    today,
                )
            )
            raise _Stop(f"no recorded result for {call.name} ({call.id})")
        want = canonical_json({"tool": recorded["tool"], "arguments": recorded.get("arguments", {})})
        ok = want == today
        detail = (
            f"{call.name} with the recorded arguments" if ok else f"{call.name}: tool or arguments differ"
        )
        self._report.checks.append(ReplayCheck(step, "tool_call", ok, detail, want, today))
        result, is_error = self._results[call.id]
        return ToolCallOutput(call_id=call.id, name=call.name, result=result, is_error=is_error)


def _recorded_tools(records: list[AuditRecord]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Each call id's recorded call and what the model got back for it (result, or the refusal)."""
    calls: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {}
    for r in records:
        cid = r.payload.get("call_id")
        if not cid:
            continue
        if r.kind == "tool_call":
            calls[cid] = r.payload
        elif r.kind == "backend_response":
            results[cid] = (r.payload.get("result"), bool(r.payload.get("is_error")))
        elif r.kind == "policy_decision" and r.payload.get("outcome") == "deny" and cid not in results:
            # Refused before the audit stage: the model saw the refusal (gateway.error_result).
            calls.setdefault(cid, {"tool": r.payload.get("tool"), "arguments": None})
            results[cid] = (
                {"error": r.payload.get("detail", ""), "error_type": r.payload.get("error_type")},
                True,
            )
    return calls, results


async def replay_run(fleet: Fleet, store: Store, run_id: str) -> ReplayReport:
    """Replay ``run_id`` from ``store`` through today's step loop for ``fleet``.

    Raises:
        NotFoundError: No such run, or its agent is not in today's fleet.
        ReplayDataError: The run was recorded without what a replay needs.
    """
    run = await store.get_run(run_id)
    if run is None:
        raise NotFoundError(f"there is no run {run_id!r}")
    if run.agent not in fleet.agents:
        raise NotFoundError(f"run {run_id!r} ran agent {run.agent!r}, which today's fleet file no longer has")
    records = await store.query_audit(AuditQuery(run_id=run_id, limit=1_000_000))
    prompt = next((r for r in records if r.kind == "prompt"), None)
    model_calls = [r for r in records if r.kind == "model_call"]
    if prompt is None or any("output" not in r.payload for r in model_calls):
        raise ReplayDataError(f"run {run_id!r} was recorded without its model outputs; it cannot be replayed")
    if "history" not in prompt.payload and prompt.payload.get("history_messages", 0):
        raise ReplayDataError(
            f"run {run_id!r} was recorded without its session history; it cannot be replayed"
        )
    report = ReplayReport(run_id=run_id, agent=run.agent, recorded_output=run.output)
    today_prompt = render_prompt(fleet, run.agent)
    recorded_sha = prompt.payload.get("prompt_sha256", "")
    recorded_ref = f"{prompt.payload.get('prompt_id')}@{prompt.payload.get('prompt_version')}"
    today_ref = f"{today_prompt.prompt_id}@{today_prompt.version}"
    same = today_prompt.sha256 == recorded_sha
    if same:
        detail = f"same prompt {today_ref}"
    elif recorded_ref == today_ref:
        detail = f"prompt {today_ref} has different text today than when the run was recorded"
    else:
        detail = f"the agent's prompt was {recorded_ref}, today it is {today_ref}"
    report.checks.append(ReplayCheck(0, "prompt", same, detail, recorded_sha[:16], today_prompt.sha256[:16]))
    calls, results = _recorded_tools(records)
    with tempfile.TemporaryDirectory(prefix="raygent-replay-") as scratch_dir:
        # A scratch store: the replay writes its own run and audit records, never into the real trail.
        scratch = SQLiteStore(Path(scratch_dir) / "replay.db")
        try:
            history = prompt.payload.get("history", [])
            if history:
                await scratch.put_session(SessionContext(run.session_id, history, 0, 0.0), expected_version=0)
            clock = SystemClock()
            loop = AgentLoop(
                fleet,
                run.agent,
                store=scratch,
                model=_ReplayModel(model_calls, report),
                tools=_ReplayTools(calls, results, report),
                tracer=NoOpTracer(),
                clock=clock,
            )
            req = RunInput(
                run_id=run.run_id,
                agent=run.agent,
                input=run.input,
                session_id=run.session_id,
                deadline_ts=clock.now() + 3600.0,
                caller_chain=tuple(run.caller_chain),
            )
            try:
                output = await loop.run(req)
                report.replayed_output = output.output
                if output.status != "completed" and output.error:
                    report.stopped = str(output.error.get("detail", output.status))
            except _Stop as stop:
                report.stopped = str(stop)
        finally:
            await scratch.close()
    if report.stopped is None and run.status == "completed":
        same = report.replayed_output == run.output
        last = max((c.step for c in report.checks), default=0)
        report.checks.append(
            ReplayCheck(
                last,
                "answer",
                same,
                "same final answer" if same else "the final answer differs",
                run.output or "",
                report.replayed_output or "",
            )
        )
    return report


def _print(report: ReplayReport) -> None:
    table = Table(title=f"replay of {report.run_id} ({report.agent})")
    for column in ("step", "check", "", "detail", "recorded", "today"):
        table.add_column(column, overflow="fold")
    for c in report.checks:
        mark = "[green]same[/green]" if c.ok else "[red]DIFF[/red]"
        table.add_row(str(c.step), c.kind, mark, c.detail, c.recorded[:60], c.today[:60])
    out.print(table)
    if report.stopped:
        out.print(f"replay stopped: {report.stopped}", highlight=False)
    first = report.first_divergence
    if first is None:
        out.print("no divergence: today's code and prompt reproduce the recorded run", highlight=False)
    else:
        out.print(f"first divergence at step {first.step} ({first.kind}): {first.detail}", highlight=False)


@app.command("replay")
def replay(
    run_id: Annotated[str, typer.Argument(help="The run to replay.")],
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Re-run RUN_ID against its recorded model and tool responses; show where today's code diverges."""
    fleet = load_fleet_or_exit(fleet_file, state_dir)

    async def go() -> ReplayReport:
        store = open_store(fleet)
        try:
            return await replay_run(fleet, store, run_id)
        finally:
            await store.close()

    try:
        report = asyncio.run(go())
    except (NotFoundError, ReplayDataError) as exc:
        fail(exc.detail, 2)
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        _print(report)
    if report.first_divergence is not None:
        raise CliExit(1)
