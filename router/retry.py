"""The one retry layer: a retry budget (token bucket) and full-jitter exponential backoff.

The budget stops retry storms: every first attempt deposits ``budget_ratio`` tokens, a steady
``min_retries_per_s`` trickles in so a quiet router can still retry, and every retry withdraws one. When
the bucket is empty a failed call fails instead of adding load to backends that are already failing.
Randomness comes from the ``random.Random`` passed in, so tests and benchmarks are reproducible.
"""

from __future__ import annotations

import random

from raygent.core.routing import RetrySpec

__all__ = ["RetryBudget", "backoff_s"]

# Earned retries banked at most: what this many first attempts deposit.
_BANKED_REQUESTS = 100


class RetryBudget:
    """Token bucket of retries.

    Args:
        spec: Ratio, floor rate and window from the fleet file.
        now: Current monotonic time (the bucket starts full at the floor rate).
    """

    __slots__ = ("_cap", "_floor_rate", "_last", "_ratio", "tokens")

    def __init__(self, spec: RetrySpec, now: float) -> None:
        self._ratio = spec.budget_ratio
        self._floor_rate = spec.min_retries_per_s
        # The bucket never holds more than a window of floor retries plus what 100 requests earn.
        self._cap = max(
            1.0, spec.min_retries_per_s * spec.budget_window_s + _BANKED_REQUESTS * spec.budget_ratio
        )
        self.tokens = min(self._cap, spec.min_retries_per_s * spec.budget_window_s)
        self._last = now

    def on_request(self, now: float) -> None:
        """A first attempt: earns ``budget_ratio`` retries."""
        self._refill(now)
        self.tokens = min(self._cap, self.tokens + self._ratio)

    def try_spend(self, now: float) -> bool:
        """Withdraw one retry; False (and nothing withdrawn) when the budget is spent."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self.tokens = min(self._cap, self.tokens + elapsed * self._floor_rate)
            self._last = now


def backoff_s(retry: int, spec: RetrySpec, rng: random.Random) -> float:
    """Full-jitter backoff before retry number ``retry`` (1-based) of the same backend.

    Returns:
        A delay drawn uniformly from ``[0, min(max_backoff, base * 2**(retry-1))]`` milliseconds, in s.
    """
    ceiling_ms = min(spec.max_backoff_ms, spec.base_backoff_ms * (2 ** max(0, retry - 1)))
    return rng.uniform(0.0, ceiling_ms) / 1000.0
