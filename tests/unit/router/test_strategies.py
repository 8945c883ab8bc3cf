"""Each strategy's ranking and reason, on hand-made candidates with real stats objects."""

from __future__ import annotations

import pytest

from raygent.router.stats import BackendStats
from raygent.router.strategies import (
    Candidate,
    CostStrategy,
    FixedStrategy,
    LatencyBudgetStrategy,
    RouteRequest,
    TierStrategy,
    make_strategy,
)


def cand(name: str, tier: str, cin: float, cout: float, expected_ms: float, *, conc: int = 4) -> Candidate:
    return Candidate(name, tier, cin, cout, expected_ms, conc, BackendStats(name, window=32))


def warm(c: Candidate, latency_s: float, n: int = 20) -> None:
    for _ in range(n):
        c.stats.begin()
        c.stats.end(latency_s, ok=True)


@pytest.fixture
def pool() -> list[Candidate]:
    return [
        cand("premium", "premium", 2.5, 10.0, 900),
        cand("fast", "premium", 1.0, 4.0, 250),
        cand("open", "cheap", 0.1, 0.2, 400),
    ]


def req(budget: float | None = None, tier: str = "premium") -> RouteRequest:
    return RouteRequest(
        tier=tier, input_tokens=500, output_tokens=200, latency_budget_ms=budget, min_samples=8
    )


def test_cost_ranks_cheapest_first(pool: list[Candidate]) -> None:
    d = CostStrategy().choose(req(), pool)
    assert d.order == ("open", "fast", "premium")
    assert d.reason.startswith("cost: open cheapest")


def test_latency_budget_takes_the_cheapest_that_fits_on_priors(pool: list[Candidate]) -> None:
    assert LatencyBudgetStrategy().choose(req(500), pool).order[0] == "open"
    tight = LatencyBudgetStrategy().choose(req(300), pool)
    assert tight.order == ("fast", "open", "premium")  # fits: fast; then the rest fastest first
    assert "fast cheapest that fits" in tight.reason and "1/3 fit" in tight.reason
    none = LatencyBudgetStrategy().choose(req(100), pool)
    assert none.order[0] == "fast" and "none fits" in none.reason


def test_latency_budget_follows_live_p95_and_queueing(pool: list[Candidate]) -> None:
    _, fast, open_ = pool
    warm(open_, 0.120)  # the open model turns out fast: it now fits a 300 ms budget
    assert LatencyBudgetStrategy().choose(req(300), pool).order[0] == "open"
    for _ in range(12):  # 12 in flight on 4 slots: +2.25 service times of queueing -> 390 ms
        open_.stats.begin()
    assert LatencyBudgetStrategy().choose(req(300), pool).order[0] == "fast"
    warm(fast, 0.6)
    d = LatencyBudgetStrategy().choose(req(300), pool)
    assert "none fits" in d.reason


def test_latency_budget_uses_the_route_default_then_cost(pool: list[Candidate]) -> None:
    assert LatencyBudgetStrategy(300).choose(req(None), pool).order[0] == "fast"
    d = LatencyBudgetStrategy().choose(req(None), pool)
    assert d.order[0] == "open" and d.reason.startswith("latency_budget: no budget; cost:")


def test_tier_and_fixed(pool: list[Candidate]) -> None:
    assert TierStrategy().choose(req(tier="premium"), pool).order == ("premium", "fast", "open")
    d = TierStrategy().choose(req(tier="standard"), pool)
    assert d.order[0] == "open" and "no model in this tier" in d.reason
    assert FixedStrategy("premium").choose(req(), pool).order == ("premium",)


def test_make_strategy() -> None:
    assert isinstance(make_strategy("cost"), CostStrategy)
    assert isinstance(make_strategy("latency_budget", latency_budget_ms=5), LatencyBudgetStrategy)
    with pytest.raises(ValueError, match="needs a model"):
        make_strategy("fixed")
    with pytest.raises(ValueError, match="unknown"):
        make_strategy("random")
