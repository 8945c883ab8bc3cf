"""The fleet file's ``router:`` section and ``kind: vllm`` models: parsing, defaults and cross-checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet, VLLMModelSpec, cross_check
from raygent.router.router import Router

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "fleet.yaml"

ROUTER_SECTION = """
router:
  routes:
    premium: {strategy: latency_budget, latency_budget_ms: 2500, fallbacks: [open-small]}
    cheap: {strategy: cost}
    standard: {strategy: fixed, model: premium}
  breaker: {error_rate_threshold: 0.5, window_calls: 20, open_s: 10}
  retry: {max_attempts: 3, budget_ratio: 0.2}
  budgets:
    ledger: {kind: sqlite}
    per_session: {max_tokens: 20000, max_usd: 0.05}
    agents: {orders: {max_tokens: 5000}}
"""


def fleet_with(extra: str) -> Fleet:
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(yaml.safe_load(extra))
    return Fleet.model_validate(data)


def test_router_section_parses_and_builds_a_router() -> None:
    fleet = fleet_with(ROUTER_SECTION)
    assert cross_check(fleet) == []
    assert fleet.router.routes["premium"].latency_budget_ms == 2500
    assert fleet.router.budgets.enabled
    router = Router.from_fleet(fleet, clock=SystemClock())
    from raygent.core.interceptors import CallContext, ModelCallInput
    from raygent.core.messages import Message

    ctx = CallContext(run_id="r", session_id="s", agent="support", identity="svc@acme", tier="standard")
    decision = router.decide(ModelCallInput(ctx=ctx, messages=(Message("user", "hi"),)))
    assert decision.order == ("premium",) and decision.reason == "fixed: premium"


def test_typos_and_bad_references_are_reported() -> None:
    with pytest.raises(ValidationError, match="stratgy"):
        fleet_with("router: {routes: {cheap: {stratgy: cost}}}")
    with pytest.raises(ValidationError, match="needs 'model'"):
        fleet_with("router: {routes: {cheap: {strategy: fixed}}}")
    fleet = fleet_with(
        "router: {routes: {cheap: {strategy: cost, fallbacks: [gpt-9]}}, budgets: {agents: {ghost: {}}}}"
    )
    issues = {(i.loc, i.message) for i in cross_check(fleet)}
    assert (("router", "routes", "cheap", "fallbacks", "0"), "unknown model 'gpt-9'") in issues
    assert (("router", "budgets", "agents", "ghost"), "unknown agent 'ghost'") in issues


def test_vllm_model_kind_with_gpu_resources() -> None:
    fleet = fleet_with(
        """
models:
  open:
    kind: vllm
    model: ../../tests/fixtures/tiny-llama/model
    tier: cheap
    num_gpus: 1
    num_cpus: 4
    kv_cache_memory_bytes: 1073741824
agents:
  support: {identity: svc@acme, prompt: support@v1, tier: cheap}
"""
    )
    spec = fleet.models["open"]
    assert isinstance(spec, VLLMModelSpec) and spec.num_gpus == 1 and spec.max_concurrency == 16
    with pytest.raises(ValidationError):
        fleet_with("models: {open: {kind: vllm, model: x, kv_cache_memory_bytes: 10}}")
