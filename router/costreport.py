"""Spend per agent, model and tier from recorded runs, and what always-premium would have cost.

Every model step of a run records its backend, prompt and completion tokens and cost; the
counterfactual prices the same tokens at the premium backend's rates. The report is pure: it reads
:class:`~raygent.core.store.base.RunRecord` objects and the fleet, so the CLI, the API and the
benchmarks share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from raygent.core.config import ModelSpec
from raygent.core.errors import ConfigError
from raygent.core.store.base import RunRecord

__all__ = ["CostLine", "CostReport", "build_cost_report", "premium_backend"]


@dataclass(slots=True)
class CostLine:
    """Totals of one group (an agent, a model or a tier)."""

    key: str
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    premium_cost_usd: float = 0.0

    @property
    def savings_ratio(self) -> float:
        """Share of the always-premium spend that routing saved (0 when nothing was spent)."""
        return 1.0 - self.cost_usd / self.premium_cost_usd if self.premium_cost_usd > 0 else 0.0


@dataclass(slots=True)
class CostReport:
    premium_backend: str
    runs: int = 0
    total: CostLine = field(default_factory=lambda: CostLine("total"))
    by_agent: dict[str, CostLine] = field(default_factory=dict)
    by_model: dict[str, CostLine] = field(default_factory=dict)
    by_tier: dict[str, CostLine] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        def lines(group: Mapping[str, CostLine]) -> list[dict[str, object]]:
            return [_line_dict(line) for line in group.values()]

        return {
            "premium_backend": self.premium_backend,
            "runs": self.runs,
            "total": _line_dict(self.total),
            "by_agent": lines(self.by_agent),
            "by_model": lines(self.by_model),
            "by_tier": lines(self.by_tier),
        }


def _line_dict(line: CostLine) -> dict[str, object]:
    return {
        "key": line.key,
        "steps": line.steps,
        "input_tokens": line.input_tokens,
        "output_tokens": line.output_tokens,
        "cost_usd": round(line.cost_usd, 8),
        "premium_cost_usd": round(line.premium_cost_usd, 8),
        "savings_ratio": round(line.savings_ratio, 4),
    }


def premium_backend(models: Mapping[str, ModelSpec], name: str | None = None) -> str:
    """The backend the counterfactual prices at: ``name``, else the dearest ``premium``-tier model.

    Raises:
        ConfigError: ``name`` is not a model of the fleet, or the fleet has no model at all.
    """
    if name is not None:
        if name not in models:
            raise ConfigError(f"unknown model {name!r}; the fleet has: {', '.join(models)}")
        return name
    pool = [n for n, s in models.items() if s.tier == "premium"] or list(models)
    if not pool:
        raise ConfigError("the fleet has no model to price the counterfactual at")
    return max(pool, key=lambda n: models[n].cost_per_1k_input_usd + models[n].cost_per_1k_output_usd)


def build_cost_report(
    runs: Iterable[RunRecord], models: Mapping[str, ModelSpec], *, premium: str | None = None
) -> CostReport:
    """Aggregate the model steps of ``runs``.

    Args:
        runs: Recorded runs (their ``steps`` with ``kind: model``).
        models: The fleet's models, for tiers and the premium prices.
        premium: The backend to price the counterfactual at (default: the dearest premium model).
    """
    chosen = premium_backend(models, premium)
    p_in = models[chosen].cost_per_1k_input_usd
    p_out = models[chosen].cost_per_1k_output_usd
    report = CostReport(premium_backend=chosen)
    for run in runs:
        report.runs += 1
        for step in run.steps:
            if step.get("kind") != "model":
                continue
            backend = str(step.get("backend", "?"))
            spec = models.get(backend)
            tier = spec.tier if spec is not None else "unknown"
            tokens_in = int(step.get("input_tokens", 0))
            tokens_out = int(step.get("output_tokens", 0))
            cost = float(step.get("cost_usd", 0.0))
            premium_cost = (tokens_in * p_in + tokens_out * p_out) / 1000.0
            for group, key in (
                (None, "total"),
                (report.by_agent, run.agent),
                (report.by_model, backend),
                (report.by_tier, tier),
            ):
                line = report.total if group is None else group.setdefault(key, CostLine(key))
                line.steps += 1
                line.input_tokens += tokens_in
                line.output_tokens += tokens_out
                line.cost_usd += cost
                line.premium_cost_usd += premium_cost
    return report
