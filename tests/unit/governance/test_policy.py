"""The Cedar policy engine: the example's outcomes, obligations from annotations, fail closed."""

from __future__ import annotations

import pytest

from raygent.core.config import Fleet
from raygent.core.errors import ConfigError
from raygent.core.interceptors import CallContext
from raygent.governance.policy import PolicyEngine, to_cedar_value
from raygent.governance.policytest import PolicyCase, run_case, run_policy_tests


def ctx(end_user: str = "C105", identity: str = "svc-refunds@acme") -> CallContext:
    return CallContext(run_id="r", session_id="s", agent="refunds", identity=identity, end_user=end_user)


def test_the_examples_policy_test_file_passes(governed_fleet: Fleet) -> None:
    errors, results = run_policy_tests(governed_fleet)
    assert errors == []
    assert len(results) == 7 and all(r.passed for r in results), [r.problems for r in results]


def test_a_wrong_expectation_fails_with_the_reason(governed_fleet: Fleet) -> None:
    engine = PolicyEngine.from_fleet(governed_fleet)
    case = PolicyCase(
        name="x", agent="refunds", tool="issue_refund", end_user="C105", expect="allow",
        arguments={"order_id": "1042", "amount_usd": 10.0},
    )  # fmt: skip
    result = run_case(engine, governed_fleet, case)
    assert not result.passed and "another customer" in result.problems[0]


def test_obligations_come_from_the_permits_annotations() -> None:
    engine = PolicyEngine(
        '@id("big") @require("approval") permit(principal, action, resource) '
        "when { context.amount_cents > 100 };"
        '@id("small") permit(principal, action, resource) when { context.amount_cents <= 100 };'
    )
    big = engine.decide(engine.build(ctx=ctx(), tool="pay", arguments={}))
    assert big.outcome == "allow"  # no amount_arg configured: 0 cents
    from raygent.core.govconfig import PolicyToolSpec

    engine = PolicyEngine(engine.text, tools={"pay": PolicyToolSpec(amount_arg="usd")})
    decision = engine.decide(engine.build(ctx=ctx(), tool="pay", arguments={"usd": 2.5}))
    assert decision.outcome == "require_approval" and decision.policies == ("big",)
    assert decision.amount_usd == 2.5


def test_nothing_permitted_is_denied() -> None:
    engine = PolicyEngine('permit(principal, action == Action::"a", resource);')
    decision = engine.decide(engine.build(ctx=ctx(), tool="b", arguments={}))
    assert decision.outcome == "deny" and decision.reasons == ("no policy permits this action",)


def test_an_erroring_forbid_fails_closed() -> None:
    # The forbid reads an attribute the context does not have: Cedar skips it, we deny.
    engine = PolicyEngine(
        "permit(principal, action, resource);"
        '@reason("blocked") forbid(principal, action, resource) when { context.arguments.missing == 1 };'
    )
    decision = engine.decide(engine.build(ctx=ctx(), tool="t", arguments={}))
    assert decision.outcome == "deny" and "policy evaluation error" in decision.reasons[0]


def test_an_engine_failure_is_a_deny(governed_fleet: Fleet) -> None:
    def broken_loader(resource_type: str, resource_id: str) -> dict[str, object]:
        raise RuntimeError("order service down")

    engine = PolicyEngine.from_fleet(governed_fleet)
    engine._load_resource = broken_loader
    from raygent.core.interceptors import ToolCallInput
    from raygent.core.messages import ToolCall

    call = ToolCall(id="c", name="issue_refund", arguments={"order_id": "1004", "amount_usd": 1.0})
    decision = engine.decide_call(ToolCallInput(ctx(), call))
    assert decision.outcome == "deny" and "order service down" in decision.reasons[0]


def test_unparseable_policies_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="do not parse"):
        PolicyEngine("permit(principal, action resource);")


def test_schema_errors_are_reported() -> None:
    engine = PolicyEngine(
        'permit(principal, action == Action::"a", resource) when { context.nope > 1 };',
        schema="entity U; action a appliesTo { principal: U, resource: U, context: {} };",
    )
    assert engine.validate()


def test_cedar_values() -> None:
    assert to_cedar_value({"a": 1.5, "b": [1, None], "c": None, "d": True}) == {
        "a": {"__extn": {"fn": "decimal", "arg": "1.5000"}},
        "b": [1],
        "d": True,
    }
