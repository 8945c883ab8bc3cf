"""``raygent test-tools FLEET``: integration tests for every tool of a fleet, against the real backends.

For each tool, through the real :class:`ToolGateway` (identity, grant and schema checks included):

- ``schema``: the parameters are a valid JSON schema, the sample arguments fit it, and the tool's
  backend agrees (an ``mq`` fixed-width request record round-trips the sample, a ``soap`` tool's
  properties are inputs of its WSDL operation);
- ``timeout``: a call with a deadline too short to meet comes back as a clear ``tool-timeout`` error (or
  a result) within the deadline, never a hang or a crash;
- ``errors``: arguments that break the schema come back as a clear ``invalid-arguments`` error;
- ``idempotency``: an idempotent tool called twice with the same call id answers the same;
- ``sample``: the recorded sample call (``<fleet>.samples.yaml`` beside the fleet, ``--record`` writes
  it) still gives the recorded result.

Exit status: 0 when nothing failed, 1 when a check failed, 2 for a usage or fleet-file problem.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from rich.table import Table

from raygent.cli._app import StateOpt, app, fail, load_fleet_or_exit, out
from raygent.core.clock import SystemClock
from raygent.core.config import AgentToolSpec, FixedWidthCodecSpec, Fleet, MqToolSpec, SoapToolSpec
from raygent.core.interceptors import CallContext, ToolCallInput, ToolCallOutput
from raygent.core.messages import ToolCall
from raygent.governance.gateway import ToolGateway
from raygent.integrations.errors import LayoutError

__all__ = ["CheckResult", "run_checks", "samples_path"]

_TIMEOUT_PROBE_S = 0.001
_TIMEOUT_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    tool: str
    check: str
    outcome: str  # pass | fail | skip
    detail: str = ""


def samples_path(fleet_file: Path) -> Path:
    return fleet_file.with_name(f"{fleet_file.stem}.samples.yaml")


def _load_samples(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        fail(f"{path} is not valid YAML: {exc}", 2)
    if not isinstance(data, dict):
        fail(f"{path} must map tool names to {{arguments, result}}", 2)
    return data


def _same_value(sent: Any, back: Any) -> bool:
    """A value equals what came back through a fixed-width field (numbers by value, text unpadded)."""
    try:
        return Decimal(str(sent)) == Decimal(str(back))
    except (InvalidOperation, ValueError):
        return str(sent).rstrip(" ") == str(back)


def _subset(expected: Any, actual: Any) -> bool:
    """Every key of ``expected`` is in ``actual`` with an equal value (recursively)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(k in actual and _subset(v, actual[k]) for k, v in expected.items())
    return bool(expected == actual)


class _Checker:
    def __init__(self, fleet: Fleet, samples: dict[str, Any]) -> None:
        self.fleet = fleet
        self.samples = samples
        self.clock = SystemClock()
        self.gateway = ToolGateway(fleet, invoker=None, clock=self.clock)
        self.results: list[CheckResult] = []
        self.recorded: dict[str, Any] = {}

    def add(self, tool: str, check: str, outcome: str, detail: str = "") -> None:
        self.results.append(CheckResult(tool, check, outcome, detail))

    def _agent_for(self, tool: str) -> str | None:
        return next((name for name, agent in self.fleet.agents.items() if tool in agent.tools), None)

    async def call(
        self, tool: str, arguments: dict[str, Any], *, call_id: str, deadline_s: float
    ) -> ToolCallOutput:
        agent = self._agent_for(tool)
        assert agent is not None  # callers check first
        ctx = CallContext(
            run_id=f"test-tools-{int(self.clock.now())}",
            session_id="test-tools",
            agent=agent,
            identity=self.fleet.agents[agent].identity,
            deadline_ts=self.clock.now() + deadline_s,
        )
        return await self.gateway.call_tool(
            ToolCallInput(ctx, ToolCall(id=call_id, name=tool, arguments=arguments))
        )

    def schema(self, tool: str, arguments: dict[str, Any] | None) -> None:
        spec = self.fleet.tools[tool]
        try:
            Draft202012Validator.check_schema(spec.parameters)
        except SchemaError as exc:
            self.add(tool, "schema", "fail", f"parameters are not a valid JSON schema: {exc.message}")
            return
        notes: list[str] = []
        if arguments is not None:
            errors = list(Draft202012Validator(spec.parameters).iter_errors(arguments))
            if errors:
                self.add(
                    tool, "schema", "fail", f"the sample arguments break the schema: {errors[0].message}"
                )
                return
            notes.append("sample fits")
        try:
            notes.extend(self._backend_schema(tool, spec, arguments))
        except Exception as exc:
            self.add(tool, "schema", "fail", getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}")
            return
        self.add(tool, "schema", "pass", ", ".join(notes) or "valid JSON schema")

    def _backend_schema(self, tool: str, spec: Any, arguments: dict[str, Any] | None) -> list[str]:
        executor: Any = self.gateway.executor(tool)
        if isinstance(spec, MqToolSpec) and isinstance(spec.codec, FixedWidthCodecSpec):
            record = executor.codec.request
            if arguments is not None:
                decoded = record.decode(record.encode(arguments))
                for key, value in arguments.items():
                    if not _same_value(value, decoded.get(key)):
                        raise LayoutError(
                            f"{key}={value!r} comes back from {record.name} as {decoded.get(key)!r}"
                        )
            return [f"{record.name} ({record.length} bytes) round-trips"]
        if isinstance(spec, SoapToolSpec):
            names = set(executor.input_names())
            extra = sorted(set(spec.parameters.get("properties", {})) - names)
            if extra:
                raise LayoutError(
                    f"properties {extra} are not inputs of {spec.operation} (it has {sorted(names)})"
                )
            return [f"properties are inputs of {spec.operation}"]
        return []

    async def timeout(self, tool: str, arguments: dict[str, Any]) -> None:
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(
                self.call(
                    tool, arguments, call_id=f"{tool}:timeout:{time.time_ns()}", deadline_s=_TIMEOUT_PROBE_S
                ),
                _TIMEOUT_PROBE_S + _TIMEOUT_GRACE_S,
            )
        except TimeoutError:
            self.add(tool, "timeout", "fail", f"the call ignored its deadline for {_TIMEOUT_GRACE_S:g} s")
            return
        elapsed = time.monotonic() - started
        kind = (
            result.result.get("error_type") if result.is_error and isinstance(result.result, dict) else None
        )
        if result.is_error and kind not in ("tool-timeout", "deadline-exceeded"):
            self.add(tool, "timeout", "fail", f"a missed deadline came back as {kind!r}, not tool-timeout")
        else:
            self.add(tool, "timeout", "pass", f"{kind or 'answered'} after {elapsed * 1000:.0f} ms")

    async def errors(self, tool: str) -> None:
        result = await self.call(tool, {"__not_an_argument__": 1}, call_id=f"{tool}:bad", deadline_s=10)
        spec = self.fleet.tools[tool]
        kind = result.result.get("error_type") if isinstance(result.result, dict) else None
        if kind == "tool-arguments-invalid":
            self.add(tool, "errors", "pass", "bad arguments → tool-arguments-invalid")
        elif not result.is_error and spec.parameters.get("additionalProperties", True) is not False:
            self.add(tool, "errors", "skip", "the schema accepts any extra argument (additionalProperties)")
        else:
            self.add(tool, "errors", "fail", f"bad arguments came back as {kind or 'a result'}")

    async def idempotency(self, tool: str, arguments: dict[str, Any]) -> ToolCallOutput:
        call_id = f"test-tools:{tool}:{time.time_ns()}"
        first = await self.call(
            tool, arguments, call_id=call_id, deadline_s=self.fleet.tools[tool].timeout_s + 5
        )
        if first.is_error:
            self.add(tool, "idempotency", "fail", f"the call failed: {first.result}")
            return first
        if not self.fleet.tools[tool].idempotent:
            self.add(tool, "idempotency", "skip", "declared idempotent: false, not called twice")
            return first
        second = await self.call(
            tool, arguments, call_id=call_id, deadline_s=self.fleet.tools[tool].timeout_s + 5
        )
        same = not second.is_error and second.result == first.result
        self.add(
            tool,
            "idempotency",
            "pass" if same else "fail",
            "same call id, same answer" if same else str(second.result),
        )
        return first

    def sample(self, tool: str, output: ToolCallOutput, *, record: bool) -> None:
        sample = self.samples.get(tool) or {}
        if record:
            if not output.is_error:
                self.recorded[tool] = {"arguments": sample.get("arguments"), "result": output.result}
                self.add(tool, "sample", "pass", "recorded")
            else:
                self.add(tool, "sample", "fail", "not recorded: the call failed")
            return
        if "result" not in sample:
            self.add(tool, "sample", "skip", "no recorded result (run with --record)")
        elif _subset(sample["result"], output.result):
            self.add(tool, "sample", "pass", "matches the recording")
        else:
            self.add(tool, "sample", "fail", f"expected {sample['result']}, got {output.result}")

    async def check_tool(self, tool: str, *, record: bool) -> None:
        spec = self.fleet.tools[tool]
        arguments = (self.samples.get(tool) or {}).get("arguments")
        self.schema(tool, arguments)
        if isinstance(spec, AgentToolSpec):
            self.add(tool, "calls", "skip", "delegation to an agent: covered by that agent's runs")
            return
        if self._agent_for(tool) is None:
            self.add(tool, "calls", "skip", "no agent is granted this tool")
            return
        await self.errors(tool)
        if arguments is None:
            self.add(tool, "calls", "skip", f"no sample arguments in the samples file for {tool!r}")
            return
        await self.timeout(tool, arguments)
        output = await self.idempotency(tool, arguments)
        self.sample(tool, output, record=record)


async def run_checks(
    fleet: Fleet, samples: dict[str, Any], *, tools: list[str] | None = None, record: bool = False
) -> tuple[list[CheckResult], dict[str, Any]]:
    """Run every check on ``tools`` (default: all); returns the results and what ``record`` captured."""
    checker = _Checker(fleet, samples)
    try:
        for tool in tools or list(fleet.tools):
            await checker.check_tool(tool, record=record)
    finally:
        await checker.gateway.aclose()
    return checker.results, checker.recorded


@app.command("test-tools")
def test_tools(
    fleet_file: Annotated[Path, typer.Argument(help="Fleet file whose tools to test.")],
    tool: Annotated[
        list[str] | None, typer.Option("--tool", "-t", help="Only this tool (repeatable).")
    ] = None,
    samples: Annotated[
        Path | None, typer.Option(help="Samples file (default: <fleet>.samples.yaml).")
    ] = None,
    record: Annotated[bool, typer.Option("--record", help="Write the results as the new samples.")] = False,
    state_dir: StateOpt = None,
) -> None:
    """Integration-test every tool of a fleet against its real backend (schema, timeout, errors,
    idempotency, recorded sample)."""
    fleet = load_fleet_or_exit(fleet_file, state_dir)
    unknown = [t for t in tool or [] if t not in fleet.tools]
    if unknown:
        fail(f"no tool {unknown[0]!r} in {fleet_file} (tools: {', '.join(fleet.tools)})", 2)
    path = samples or samples_path(fleet_file)
    data = _load_samples(path)
    results, recorded = asyncio.run(run_checks(fleet, data, tools=tool, record=record))
    table = Table("tool", "check", "outcome", "detail", title=f"test-tools {fleet.name}")
    colour = {"pass": "green", "fail": "red", "skip": "yellow"}
    for r in results:
        table.add_row(r.tool, r.check, f"[{colour[r.outcome]}]{r.outcome}[/]", r.detail)
    out.print(table)
    if record and recorded:
        merged = {**data, **recorded}
        path.write_text(yaml.safe_dump(merged, sort_keys=True, allow_unicode=True))
        out.print(f"recorded {len(recorded)} sample(s) in {path}", highlight=False)
    failed = sum(r.outcome == "fail" for r in results)
    counts = {k: sum(r.outcome == k for r in results) for k in ("pass", "fail", "skip")}
    out.print(f"checks: {counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip", highlight=False)
    if failed:
        fail(f"{failed} tool check(s) failed")
