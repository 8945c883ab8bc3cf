"""The circuit breaker state machine, driven by explicit times."""

from __future__ import annotations

from raygent.core.routing import BreakerSpec
from raygent.router.breaker import DEFAULT_COOLDOWN_S, CircuitBreaker

SPEC = BreakerSpec(error_rate_threshold=0.5, window_calls=10, min_calls=4, open_s=5, half_open_probes=1)


def test_opens_on_error_rate_only_after_min_calls() -> None:
    breaker = CircuitBreaker(SPEC)
    for t in range(3):
        assert breaker.acquire(t)
        breaker.on_failure(t)
    assert breaker.state == "closed"  # 3 calls < min_calls
    assert breaker.acquire(3)
    breaker.on_failure(3)
    assert breaker.state == "open"
    assert breaker.blocked_until(3.5) == 8.0
    assert not breaker.acquire(4)


def test_successes_keep_it_closed_below_the_threshold() -> None:
    breaker = CircuitBreaker(SPEC)
    for t in range(10):
        assert breaker.acquire(t)
        (breaker.on_failure if t % 3 == 1 else breaker.on_success)(t)
    assert breaker.state == "closed"
    assert breaker.error_rate == 0.3


def test_half_open_admits_one_probe_then_closes_or_reopens() -> None:
    breaker = CircuitBreaker(SPEC)
    for t in range(4):
        breaker.acquire(t)
        breaker.on_failure(t)
    assert breaker.state == "open"
    assert breaker.acquire(9)  # open_s passed: half-open, one probe admitted
    assert breaker.state == "half_open"
    assert not breaker.acquire(9.1)  # a second concurrent probe is refused
    breaker.on_failure(9.2)  # the probe failed: open again for open_s
    assert breaker.state == "open" and breaker.open_until == 14.2
    assert breaker.acquire(14.3)
    breaker.on_success(14.4)
    assert breaker.state == "closed" and breaker.error_rate == 0.0
    assert breaker.opened_count == 2


def test_release_frees_a_probe_slot() -> None:
    breaker = CircuitBreaker(SPEC)
    for t in range(4):
        breaker.acquire(t)
        breaker.on_failure(t)
    assert breaker.acquire(10)
    breaker.release()
    assert breaker.acquire(10)


def test_cooldown_honours_retry_after_capped_and_defaults_without_it() -> None:
    breaker = CircuitBreaker(SPEC.model_copy(update={"max_cooldown_s": 30}))
    breaker.on_cooldown(100, 2.5)
    assert not breaker.acquire(101)
    assert breaker.blocked_until(101) == 102.5
    assert breaker.acquire(102.6)
    breaker.on_cooldown(200, 3600)
    assert breaker.cooldown_until == 230
    breaker.on_cooldown(300, None)
    assert breaker.cooldown_until == 300 + DEFAULT_COOLDOWN_S
    assert breaker.state == "closed"
