"""Routing strategies: small classes with one ``choose`` method, like a Ray Serve request router.

A strategy ranks the candidate backends for one call and says why. It never calls a backend and never
looks at breakers: the router walks the ranking, skips backends that are open or cooling down, and
appends the route's fallback chain. Every strategy is pure and cheap (a sort of a handful of
candidates), which is what keeps the decision in the tens of microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from raygent.router.stats import BackendStats

__all__ = [
    "Candidate",
    "CostStrategy",
    "Decision",
    "FixedStrategy",
    "LatencyBudgetStrategy",
    "RouteRequest",
    "Strategy",
    "TierStrategy",
    "make_strategy",
]


@dataclass(slots=True)
class Candidate:
    """A backend as a strategy sees it: static prices and latency prior, plus its live stats."""

    name: str
    tier: str
    cost_per_1k_input_usd: float
    cost_per_1k_output_usd: float
    expected_latency_ms: float
    max_concurrency: int
    stats: BackendStats

    def expected_cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.cost_per_1k_input_usd + output_tokens * self.cost_per_1k_output_usd
        ) / 1000.0


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a strategy knows about the call."""

    tier: str
    input_tokens: int
    output_tokens: int
    latency_budget_ms: float | None = None
    min_samples: int = 8


@dataclass(frozen=True, slots=True)
class Decision:
    """Backends in the order to try them, and one sentence on why the first one leads."""

    order: tuple[str, ...]
    reason: str


class Strategy(Protocol):
    name: str

    def choose(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Decision: ...


def _predicted_ms(candidate: Candidate, request: RouteRequest) -> float:
    return candidate.stats.predicted_latency_ms(
        expected_ms=candidate.expected_latency_ms,
        min_samples=request.min_samples,
        max_concurrency=candidate.max_concurrency,
    )


class TierStrategy:
    """The spine's order: the call's tier in fleet order, then every other backend cheapest first."""

    name = "tier"

    def choose(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Decision:
        in_tier = [c.name for c in candidates if c.tier == request.tier]
        others = sorted(
            (c for c in candidates if c.tier != request.tier),
            key=lambda c: c.expected_cost_usd(request.input_tokens, request.output_tokens),
        )
        order = (*in_tier, *(c.name for c in others))
        if in_tier:
            return Decision(order, f"tier={request.tier}: {order[0]}")
        first = order[0] if order else "none"
        return Decision(order, f"tier={request.tier}: no model in this tier -> {first} (cheapest)")


class CostStrategy:
    """The cheapest backend for this call's expected tokens."""

    name = "cost"

    def choose(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Decision:
        ranked = sorted(
            candidates, key=lambda c: c.expected_cost_usd(request.input_tokens, request.output_tokens)
        )
        if not ranked:
            return Decision((), "cost: no candidate")
        best = ranked[0]
        usd = best.expected_cost_usd(request.input_tokens, request.output_tokens)
        return Decision(tuple(c.name for c in ranked), f"cost: {best.name} cheapest (~${usd:.6f})")


class FixedStrategy:
    """Always the configured model (the router still falls back along the route's chain)."""

    name = "fixed"

    def __init__(self, model: str) -> None:
        self.model = model

    def choose(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Decision:
        return Decision((self.model,), f"fixed: {self.model}")


class LatencyBudgetStrategy:
    """The cheapest backend whose predicted latency (live p95 + queueing) fits the call's budget.

    Backends that fit come first, cheapest first; the others follow fastest first, so a fallback keeps
    the best chance of meeting the budget. With no budget on the call or the route it is
    :class:`CostStrategy`.

    Args:
        default_budget_ms: The route's budget, for calls that bring none.
    """

    name = "latency_budget"

    def __init__(self, default_budget_ms: float | None = None) -> None:
        self.default_budget_ms = default_budget_ms

    def choose(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Decision:
        budget = request.latency_budget_ms or self.default_budget_ms
        if budget is None:
            decision = CostStrategy().choose(request, candidates)
            return Decision(decision.order, f"latency_budget: no budget; {decision.reason}")
        fit: list[tuple[float, float, Candidate]] = []
        late: list[tuple[float, Candidate]] = []
        for c in candidates:
            predicted = _predicted_ms(c, request)
            if predicted <= budget:
                fit.append((c.expected_cost_usd(request.input_tokens, request.output_tokens), predicted, c))
            else:
                late.append((predicted, c))
        fit.sort(key=lambda item: (item[0], item[1]))
        late.sort(key=lambda item: item[0])
        order = tuple(c.name for _, _, c in fit) + tuple(c.name for _, c in late)
        if fit:
            _, predicted, best = fit[0]
            reason = (
                f"latency_budget={budget:g}ms: {best.name} cheapest that fits "
                f"(predicted {predicted:.0f}ms; {len(fit)}/{len(candidates)} fit)"
            )
        elif late:
            predicted, best = late[0]
            reason = (
                f"latency_budget={budget:g}ms: none fits; {best.name} fastest (predicted {predicted:.0f}ms)"
            )
        else:
            reason = f"latency_budget={budget:g}ms: no candidate"
        return Decision(order, reason)


def make_strategy(name: str, *, model: str | None = None, latency_budget_ms: float | None = None) -> Strategy:
    """The strategy a route names.

    Raises:
        ValueError: Unknown strategy, or ``fixed`` without a model.
    """
    if name == "tier":
        return TierStrategy()
    if name == "cost":
        return CostStrategy()
    if name == "latency_budget":
        return LatencyBudgetStrategy(latency_budget_ms)
    if name == "fixed":
        if model is None:
            raise ValueError("the fixed strategy needs a model")
        return FixedStrategy(model)
    raise ValueError(f"unknown routing strategy {name!r}")
