"""Fleet-file settings of the routing actor: routes per tier, circuit breaker, retries and budgets.

They live in one ``router:`` section of the fleet file (:class:`RouterSpec`); every model is
``extra="forbid"`` and every unit is in a field name. Kept apart from :mod:`raygent.core.config` so the
routing vocabulary is one concept in one module; ``config`` imports it, never the other way round.

.. code-block:: yaml

    router:
      routes:
        premium: {strategy: latency_budget, latency_budget_ms: 2500, fallbacks: [open-small]}
        cheap: {strategy: cost}
      breaker: {error_rate_threshold: 0.5, window_calls: 20, open_s: 10}
      retry: {max_attempts: 3, budget_ratio: 0.2}
      budgets:
        ledger: {kind: sqlite}
        per_session: {max_tokens: 20000, max_usd: 0.05}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BreakerSpec",
    "BudgetLimitSpec",
    "BudgetsSpec",
    "LedgerSpec",
    "RetrySpec",
    "RouterSpec",
    "StrategyName",
    "TierRouteSpec",
]

_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
StrategyName = Literal["tier", "latency_budget", "cost", "fixed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierRouteSpec(_Strict):
    """How the calls of one tier are routed.

    ``tier`` keeps the spine's order (the tier's models in fleet order, then the rest by cost);
    ``latency_budget`` takes the cheapest candidate whose predicted latency fits the call's budget;
    ``cost`` the cheapest candidate; ``fixed`` always ``model``. ``fallbacks`` are tried, in order,
    after the strategy's own ranking when a backend fails with a retryable error.
    """

    strategy: StrategyName = "tier"
    candidates: list[Annotated[str, Field(pattern=_NAME)]] = Field(
        default_factory=list, description="Models this route may choose from; empty: every model."
    )
    model: Annotated[str, Field(pattern=_NAME)] | None = Field(
        default=None, description="The model of a 'fixed' route."
    )
    fallbacks: list[Annotated[str, Field(pattern=_NAME)]] = Field(default_factory=list)
    latency_budget_ms: float | None = Field(
        default=None, gt=0, le=3_600_000, description="Used when the call brings no budget of its own."
    )

    @model_validator(mode="after")
    def _fixed_needs_model(self) -> TierRouteSpec:
        if self.strategy == "fixed" and self.model is None:
            raise ValueError("a 'fixed' route needs 'model'")
        if self.strategy != "fixed" and self.model is not None:
            raise ValueError("'model' only makes sense with strategy: fixed")
        return self


class BreakerSpec(_Strict):
    """Per-backend circuit breaker: opens on the error rate of the last ``window_calls`` calls."""

    error_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    window_calls: int = Field(default=20, ge=2, le=10_000)
    min_calls: int = Field(default=5, ge=1, le=10_000)
    open_s: float = Field(default=10.0, gt=0, le=3600, description="How long an open breaker refuses.")
    half_open_probes: int = Field(
        default=1, ge=1, le=100, description="Concurrent trial calls when half-open."
    )
    max_cooldown_s: float = Field(
        default=60.0, gt=0, le=3600, description="Cap on a 429/503 Retry-After cooldown."
    )


class RetrySpec(_Strict):
    """The one retry layer: attempts across backends, bounded by a token-bucket retry budget."""

    max_attempts: int = Field(
        default=3, ge=1, le=20, description="Backend calls per model call, first included."
    )
    budget_ratio: float = Field(
        default=0.2, ge=0, le=10, description="Retries earned per first attempt (Finagle-style budget)."
    )
    min_retries_per_s: float = Field(default=5.0, ge=0, le=10_000, description="Retries always allowed.")
    budget_window_s: float = Field(default=10.0, gt=0, le=3600)
    base_backoff_ms: float = Field(default=20.0, ge=0, le=60_000)
    max_backoff_ms: float = Field(default=1000.0, ge=0, le=600_000)


class BudgetLimitSpec(_Strict):
    """A spending cap; either or both of tokens and USD. Unset means unlimited."""

    max_tokens: int | None = Field(default=None, ge=0)
    max_usd: float | None = Field(default=None, ge=0)


class LedgerSpec(_Strict):
    """Where budgets are kept: SQLite beside the store (one host) or Redis (a cluster)."""

    kind: Literal["sqlite", "redis"] = "sqlite"
    path: str = Field(default="budgets.db", description="SQLite file, relative to the state directory.")
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="raygent:budget", pattern=r"^[\w:.-]{1,64}$")
    reservation_ttl_s: float = Field(
        default=300.0, gt=0, le=86_400, description="A reservation never committed is released after this."
    )


class BudgetsSpec(_Strict):
    """Budgets per session, per agent and per tenant (the domain of the agent's identity, ``svc@acme``).

    ``agents`` overrides ``per_agent`` for named agents.
    """

    ledger: LedgerSpec = Field(default_factory=LedgerSpec)
    per_session: BudgetLimitSpec | None = None
    per_agent: BudgetLimitSpec | None = None
    per_tenant: BudgetLimitSpec | None = None
    agents: dict[Annotated[str, Field(pattern=_NAME)], BudgetLimitSpec] = Field(default_factory=dict)
    expected_output_tokens: int = Field(
        default=512, ge=1, le=1_000_000, description="Output reserved up front, refunded on commit."
    )

    @property
    def enabled(self) -> bool:
        return any((self.per_session, self.per_agent, self.per_tenant, self.agents))


class RouterSpec(_Strict):
    """The ``router:`` section: routes by tier, and the resilience and budget settings."""

    routes: dict[Literal["premium", "standard", "cheap"], TierRouteSpec] = Field(default_factory=dict)
    breaker: BreakerSpec = Field(default_factory=BreakerSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    budgets: BudgetsSpec = Field(default_factory=BudgetsSpec)
    stats_window: int = Field(default=256, ge=8, le=65_536, description="Calls kept per backend for stats.")
    min_samples: int = Field(
        default=8, ge=1, le=65_536, description="Calls before live p95 replaces expected_latency_ms."
    )
