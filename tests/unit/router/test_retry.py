"""The retry budget and jittered backoff."""

from __future__ import annotations

import random

from raygent.core.routing import RetrySpec
from raygent.router.retry import RetryBudget, backoff_s


def test_budget_earns_a_ratio_per_request_and_refills_at_the_floor_rate() -> None:
    spec = RetrySpec(budget_ratio=0.1, min_retries_per_s=0, budget_window_s=10)
    budget = RetryBudget(spec, now=0)
    assert not budget.try_spend(0)  # nothing earned yet, no floor
    for _ in range(25):
        budget.on_request(0)
    assert [budget.try_spend(0) for _ in range(3)] == [True, True, False]  # 2.5 tokens earned

    floor = RetryBudget(RetrySpec(budget_ratio=0, min_retries_per_s=2, budget_window_s=1), now=0)
    assert [floor.try_spend(0) for _ in range(3)] == [True, True, False]
    assert floor.try_spend(0.5)  # 0.5 s at 2/s refills one


def test_budget_is_capped() -> None:
    budget = RetryBudget(RetrySpec(budget_ratio=1, min_retries_per_s=1, budget_window_s=2), now=0)
    budget.on_request(1000)  # a long quiet period does not bank unlimited retries
    assert budget.tokens <= 2 + 100


def test_backoff_is_full_jitter_and_capped() -> None:
    spec = RetrySpec(base_backoff_ms=10, max_backoff_ms=50)
    rng = random.Random(7)
    first = [backoff_s(1, spec, rng) for _ in range(200)]
    third = [backoff_s(3, spec, rng) for _ in range(200)]
    tenth = [backoff_s(10, spec, rng) for _ in range(200)]
    assert min(first) >= 0 and max(first) <= 0.010
    assert max(third) <= 0.040 and max(third) > 0.010
    assert max(tenth) <= 0.050
    assert len(set(first)) > 150  # jittered, not a constant
    again = random.Random(7)
    assert backoff_s(1, spec, again) == first[0]
