"""The cost report's grouping and counterfactual, on hand-made runs."""

from __future__ import annotations

import pytest

from raygent.core.config import OfflineModelSpec
from raygent.core.errors import ConfigError
from raygent.core.store.base import RunRecord
from raygent.router.costreport import build_cost_report, premium_backend

MODELS = {
    "big": OfflineModelSpec(
        kind="offline", tier="premium", cost_per_1k_input_usd=2.0, cost_per_1k_output_usd=8.0
    ),
    "bigger": OfflineModelSpec(
        kind="offline", tier="premium", cost_per_1k_input_usd=3.0, cost_per_1k_output_usd=9.0
    ),
    "small": OfflineModelSpec(
        kind="offline", tier="cheap", cost_per_1k_input_usd=0.1, cost_per_1k_output_usd=0.2
    ),
}


def run(agent: str, *steps: tuple[str, int, int]) -> RunRecord:
    out = []
    for backend, tin, tout in steps:
        spec = MODELS[backend]
        cost = (tin * spec.cost_per_1k_input_usd + tout * spec.cost_per_1k_output_usd) / 1000
        out.append(
            {
                "kind": "model",
                "backend": backend,
                "input_tokens": tin,
                "output_tokens": tout,
                "cost_usd": cost,
            }
        )
        out.append({"kind": "tool", "tool": "x", "cost_usd": 0.0})
    return RunRecord("r", agent, "s", "completed", "in", 0.0, 0.0, steps=out)


def test_groups_and_prices_at_the_dearest_premium_model() -> None:
    runs = [run("support", ("bigger", 1000, 100)), run("orders", ("small", 2000, 500), ("small", 1000, 0))]
    report = build_cost_report(runs, MODELS)
    assert report.premium_backend == "bigger" and report.runs == 2
    assert report.total.steps == 3
    assert report.total.cost_usd == pytest.approx(3.9 + 0.3 + 0.1)
    assert report.total.premium_cost_usd == pytest.approx(3.9 + (3000 * 3.0 + 500 * 9.0) / 1000)
    assert report.by_tier["premium"].savings_ratio == pytest.approx(0.0)
    assert report.by_model["small"].steps == 2
    assert set(report.by_agent) == {"support", "orders"}
    assert report.to_dict()["total"]["steps"] == 3


def test_premium_choice() -> None:
    assert premium_backend(MODELS) == "bigger"
    assert premium_backend(MODELS, "big") == "big"
    with pytest.raises(ConfigError, match="unknown model"):
        premium_backend(MODELS, "nope")
    assert build_cost_report([], MODELS).total.savings_ratio == 0.0
