"""Budget scopes of a call and the reservation it makes (the ledger itself is an integration test)."""

from __future__ import annotations

from raygent.core.config import OfflineModelSpec
from raygent.core.interceptors import CallContext, ModelCallInput
from raygent.core.messages import Message
from raygent.core.routing import BudgetLimitSpec, BudgetsSpec
from raygent.router.budget import BudgetModelInterceptor, limits_for, tenant_of

CTX = CallContext(run_id="r", session_id="s-1", agent="orders", identity="svc-orders@acme")


def test_tenant_is_the_identity_domain() -> None:
    assert tenant_of("svc-orders@acme") == "acme"
    assert tenant_of("a@b@corp") == "corp"
    assert tenant_of("svc") == "default"
    assert tenant_of("svc@") == "default"


def test_limits_cover_configured_scopes_with_agent_overrides() -> None:
    spec = BudgetsSpec(
        per_session=BudgetLimitSpec(max_tokens=100),
        per_agent=BudgetLimitSpec(max_usd=1.0),
        per_tenant=BudgetLimitSpec(),  # no cap: left out
        agents={"orders": BudgetLimitSpec(max_tokens=5)},
    )
    limits = limits_for(spec, CTX)
    assert [(lim.scope, lim.max_tokens, lim.max_usd) for lim in limits] == [
        ("session:s-1", 100, None),
        ("agent:orders", 5, None),
    ]
    assert not BudgetsSpec().enabled and spec.enabled


def test_reservation_is_the_worst_case_at_the_dearest_prices() -> None:
    models = [
        OfflineModelSpec(kind="offline", cost_per_1k_input_usd=1.0, cost_per_1k_output_usd=2.0),
        OfflineModelSpec(kind="offline", cost_per_1k_input_usd=3.0, cost_per_1k_output_usd=1.0),
    ]
    interceptor = BudgetModelInterceptor(None, BudgetsSpec(expected_output_tokens=100), models)  # type: ignore[arg-type]
    tokens, usd = interceptor.reservation(ModelCallInput(ctx=CTX, messages=(Message("user", "hello " * 40),)))
    prompt = tokens - 100
    assert prompt > 40  # the estimate plus its margin
    assert usd == (prompt * 3.0 + 100 * 2.0) / 1000
