"""Cedar policy enforcement on every tool call.

The request: principal ``Agent::"<identity>"`` (the agent's own identity), action ``Action::"<tool>"``,
resource ``<resource_type>::"<id>"`` (from the tool's ``resource_arg``, with attributes from the fleet's
``resource_loader``; ``Tool::"<tool>"`` otherwise), and a context holding the end user the agent acts
for, the requester, the session, the run, the caller chain, the amount (``amount_cents``) and the
arguments.

Cedar answers allow or deny. The other two outcomes are annotations on the permit policies that
allowed the call: ``@require("approval")``, ``@require("validation")`` (or both, comma separated); every
obligation of every determining permit applies. Forbid policies explain themselves with
``@reason("...")``, which is what the audit trail and the model see. Fail closed: a policy that errors
while evaluating, or the engine failing, is a deny.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from raygent.core.config import Fleet
from raygent.core.errors import ConfigError
from raygent.core.govconfig import PoliciesSpec, PolicyToolSpec
from raygent.core.interceptors import CallContext, ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.governance.audit import AuditWriter
from raygent.governance.decision import CURRENT_DECISION, PolicyDecision
from raygent.governance.errors import PolicyDeniedError
from raygent.governance.refusal import refuse
from raygent.integrations.python_tool import PythonToolLoader

__all__ = ["PolicyEngine", "PolicyInterceptor", "PolicyRequest", "to_cedar_value"]

ResourceLoader = Callable[[str, str], Mapping[str, Any] | None]
_MAX_LONG = 2**63 - 1


def to_cedar_value(value: Any) -> Any:
    """A JSON value in Cedar's JSON entity format: floats become ``decimal`` (4 places), lists sets,
    ``None`` members are dropped (Cedar has no null)."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return max(-_MAX_LONG, min(_MAX_LONG, value))
    if isinstance(value, float):
        return {"__extn": {"fn": "decimal", "arg": f"{value:.4f}"}}
    if isinstance(value, list | tuple):
        return [to_cedar_value(v) for v in value if v is not None]
    if isinstance(value, dict):
        return {str(k): to_cedar_value(v) for k, v in value.items() if v is not None}
    return str(value)


def _amount(arguments: Mapping[str, Any], name: str | None) -> float | None:
    if name is None or name not in arguments:
        return None
    try:
        return float(arguments[name])
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One Cedar request plus the entities it needs."""

    request: dict[str, Any]
    entities: list[dict[str, Any]]
    amount_usd: float | None
    shown: dict[str, Any]  # context and resource attributes, for audit and approvers


class PolicyEngine:
    """Parsed policies and how tool calls map onto Cedar requests.

    Args:
        policies: Cedar policy text (all files concatenated).
        schema: Cedar schema text, or None to skip validation.
        tools: Per-tool resource and amount mapping.
        resource_loader: ``(type, id) -> attributes`` for resource entities.
    """

    def __init__(
        self,
        policies: str,
        *,
        schema: str | None = None,
        tools: Mapping[str, PolicyToolSpec] | None = None,
        resource_loader: ResourceLoader | None = None,
    ) -> None:
        try:
            self._policy_set = cedarpy.PolicySet.from_str(policies)
            annotated = json.loads(cedarpy.policies_to_json_str(policies))
        except Exception as exc:
            raise ConfigError(f"Cedar policies do not parse: {exc}") from None
        self.text = policies
        self.schema = schema
        self._tools = dict(tools or {})
        self._load_resource = resource_loader
        self._annotations: dict[str, dict[str, str]] = {
            pid: dict(body.get("annotations") or {})
            for pid, body in annotated.get("staticPolicies", {}).items()
        }

    @classmethod
    def from_fleet(cls, fleet: Fleet) -> PolicyEngine:
        """The engine for ``fleet.policies``.

        Raises:
            ConfigError: No policies configured, a file is unreadable, or the policies do not parse.
        """
        spec: PoliciesSpec | None = fleet.policies
        if spec is None:
            raise ConfigError("the fleet file has no 'policies' section")

        def read(relative: str) -> str:
            path = fleet.resolve_path(relative)
            try:
                return path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read policy file {path}: {exc.strerror}") from None

        text = "\n".join(read(f) for f in spec.files)
        schema = read(spec.schema_file) if spec.schema_file else None
        loader: ResourceLoader | None = None
        if spec.resource_loader:
            loader = PythonToolLoader(Path(fleet.base_dir)).load(spec.resource_loader)
        return cls(text, schema=schema, tools=spec.tools, resource_loader=loader)

    def validate(self) -> list[str]:
        """Schema errors of the policies (empty when valid or when there is no schema)."""
        if self.schema is None:
            return []
        try:
            result = cedarpy.validate_policies(self.text, self.schema)
        except Exception as exc:
            return [f"the schema or policies cannot be validated: {exc}"]
        if result.validation_passed:
            return []
        return [str(getattr(e, "error", e)) for e in result.errors]

    def build(
        self,
        *,
        ctx: CallContext,
        tool: str,
        arguments: Mapping[str, Any],
    ) -> PolicyRequest:
        """The Cedar request for ``tool`` called with ``arguments`` in ``ctx``."""
        spec = self._tools.get(tool, PolicyToolSpec())
        if spec.resource_arg is not None and spec.resource_arg in arguments:
            resource = {"type": spec.resource_type, "id": str(arguments[spec.resource_arg])}
        else:
            resource = {"type": "Tool", "id": tool}
        attrs: Mapping[str, Any] | None = None
        if self._load_resource is not None and resource["type"] != "Tool":
            attrs = self._load_resource(resource["type"], resource["id"])
        amount = _amount(arguments, spec.amount_arg)
        context = {
            "agent": ctx.agent,
            "end_user": ctx.end_user,
            "requester": ctx.requester,
            "session_id": ctx.session_id,
            "run_id": ctx.run_id,
            "caller_chain": list(ctx.caller_chain),
            "amount_cents": round(amount * 100) if amount is not None else 0,
            "resource_known": attrs is not None,
            "arguments": dict(arguments),
        }
        entities = [
            {"uid": {"type": "Agent", "id": ctx.identity}, "attrs": {"name": ctx.agent}, "parents": []},
            {"uid": resource, "attrs": to_cedar_value(dict(attrs or {})), "parents": []},
        ]
        request = {
            "principal": {"type": "Agent", "id": ctx.identity},
            "action": {"type": "Action", "id": tool},
            "resource": resource,
            "context": to_cedar_value(context),
        }
        shown = {"context": context, "resource": {**resource, "attributes": dict(attrs or {})}}
        return PolicyRequest(request=request, entities=entities, amount_usd=amount, shown=shown)

    def decide(self, req: PolicyRequest) -> PolicyDecision:
        """Evaluate; never raises: any engine failure is a deny that says so (fail closed)."""
        started = time.perf_counter()
        try:
            result = cedarpy.is_authorized(req.request, self._policy_set, req.entities)
            allowed = result.allowed
            determining = list(result.diagnostics.reasons)
            errors = list(result.diagnostics.errors)
        except Exception as exc:
            allowed, determining, errors = False, [], [f"policy engine failed: {exc}"]
        latency_ms = (time.perf_counter() - started) * 1000
        names = tuple(self._annotations.get(p, {}).get("id", p) for p in determining)
        if errors:
            # A policy that errors is skipped by Cedar; if it was a forbid, the call would slip through.
            reasons = tuple(f"policy evaluation error: {e}" for e in errors)
            return PolicyDecision(False, (), names, reasons, req.shown, req.amount_usd, latency_ms)
        if not allowed:
            reasons = tuple(self._annotations.get(p, {}).get("reason", "") for p in determining)
            reasons = tuple(r for r in reasons if r) or ("no policy permits this action",)
            return PolicyDecision(False, (), names, reasons, req.shown, req.amount_usd, latency_ms)
        obligations: list[str] = []
        for pid in determining:
            for item in self._annotations.get(pid, {}).get("require", "").split(","):
                if item.strip() and item.strip() not in obligations:
                    obligations.append(item.strip())
        return PolicyDecision(True, tuple(obligations), names, (), req.shown, req.amount_usd, latency_ms)

    def decide_call(self, inp: ToolCallInput) -> PolicyDecision:
        try:
            req = self.build(ctx=inp.ctx, tool=inp.call.name, arguments=inp.call.arguments)
        except Exception as exc:
            return PolicyDecision(False, reasons=(f"policy request could not be built: {exc}",))
        return self.decide(req)


class PolicyInterceptor(ToolInterceptor):
    """The policy enforcement point: evaluates Cedar for the call and refuses it when denied; otherwise
    leaves the decision (with its obligations) for the interceptors below."""

    def __init__(self, engine: PolicyEngine, writer: AuditWriter) -> None:
        self._engine = engine
        self._writer = writer

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        decision = self._engine.decide_call(inp)
        token = CURRENT_DECISION.set(decision)
        try:
            if not decision.allowed:
                err = PolicyDeniedError(
                    f"{inp.call.name} denied by policy: {'; '.join(decision.reasons)}",
                    extra={"reasons": list(decision.reasons)},
                )
                return await refuse(self._writer, inp, err, stage="policy", details=decision.to_audit())
            return await self.next.call_tool(inp)
        finally:
            CURRENT_DECISION.reset(token)
