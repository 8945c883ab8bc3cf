"""Policy test cases: files of tool calls with the outcome the policies must give them.

Each case is built into a Cedar request exactly as the gateway builds one (same resource loader, same
context), so a passing file says what production will decide. ``raygent policy test`` runs them after
validating the policies against the schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raygent.core.config import Fleet
from raygent.core.errors import ConfigError
from raygent.core.interceptors import CallContext
from raygent.governance.decision import Outcome, PolicyDecision
from raygent.governance.policy import PolicyEngine

__all__ = ["CaseResult", "PolicyCase", "load_cases", "run_case", "run_policy_tests"]


class PolicyCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    agent: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    end_user: str = ""
    requester: str = ""
    expect: Literal["allow", "deny", "require_approval", "require_validation"]
    obligations: list[str] | None = None
    reason: str | None = Field(default=None, description="Substring expected in a deny reason.")


@dataclass(frozen=True)
class CaseResult:
    case: PolicyCase
    source: str
    decision: PolicyDecision
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def load_cases(fleet: Fleet) -> list[tuple[str, PolicyCase]]:
    """Every case of the fleet's policy test files, with the file it came from.

    Raises:
        ConfigError: A file is unreadable or a case is malformed.
    """
    cases: list[tuple[str, PolicyCase]] = []
    for relative in fleet.policies.tests if fleet.policies else []:
        path = fleet.resolve_path(relative)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read policy tests {path}: {exc}") from None
        if not isinstance(data, list):
            raise ConfigError(f"{path}: policy tests must be a list of cases")
        for index, raw in enumerate(data):
            try:
                cases.append((f"{relative}[{index}]", PolicyCase.model_validate(raw)))
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ConfigError(f"{path}: case {index}: {where}: {first['msg']}") from None
    return cases


def run_case(engine: PolicyEngine, fleet: Fleet, case: PolicyCase, source: str = "") -> CaseResult:
    agent = fleet.agents.get(case.agent)
    if agent is None:
        decision = PolicyDecision(False, reasons=(f"unknown agent {case.agent!r}",))
        return CaseResult(case, source, decision, (f"unknown agent {case.agent!r}",))
    ctx = CallContext(
        run_id="run_policytest",
        session_id="ses_policytest",
        agent=case.agent,
        identity=agent.identity,
        requester=case.requester or case.end_user,
        end_user=case.end_user,
    )
    decision = engine.decide(engine.build(ctx=ctx, tool=case.tool, arguments=case.arguments))
    problems: list[str] = []
    got: Outcome = decision.outcome
    if got != case.expect:
        why = f" ({'; '.join(decision.reasons)})" if decision.reasons else ""
        problems.append(f"expected {case.expect}, got {got}{why}")
    if case.obligations is not None and sorted(case.obligations) != sorted(decision.obligations):
        problems.append(
            f"expected obligations {sorted(case.obligations)}, got {sorted(decision.obligations)}"
        )
    if case.reason is not None and not any(case.reason in r for r in decision.reasons):
        problems.append(f"expected a reason containing {case.reason!r}, got {list(decision.reasons)}")
    return CaseResult(case, source, decision, tuple(problems))


def run_policy_tests(fleet: Fleet) -> tuple[list[str], list[CaseResult]]:
    """``(schema errors, case results)`` for the fleet's policies."""
    engine = PolicyEngine.from_fleet(fleet)
    errors = engine.validate()
    results = [run_case(engine, fleet, case, source) for source, case in load_cases(fleet)]
    return errors, results
