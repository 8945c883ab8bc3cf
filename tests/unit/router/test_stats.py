"""Sliding-window stats: exact percentiles over the last N samples, error rate, queueing estimate."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raygent.router.stats import BackendStats, Window


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=300), st.integers(1, 64))
def test_window_percentiles_match_a_sort_of_the_last_n(values: list[float], size: int) -> None:
    window = Window(size)
    for v in values:
        window.add(v)
    kept = values[-size:]
    assert len(window) == len(kept)
    for q in (0.0, 0.5, 0.95, 0.99):
        assert window.percentile(q) == nearest_rank(kept, q)
    assert window.mean() == pytest.approx(sum(kept) / len(kept), rel=1e-9, abs=1e-6)


def test_empty_window_reads_zero_and_rejects_size_zero() -> None:
    assert Window(4).percentile(0.95) == 0.0
    with pytest.raises(ValueError):
        Window(0)


def test_backend_stats_track_latency_errors_tokens_and_in_flight() -> None:
    stats = BackendStats("b", window=10, cost_per_1k_input_usd=0.5, cost_per_1k_output_usd=1.5)
    for i in range(20):
        stats.begin()
        stats.end(0.1 * (i + 1), ok=i % 4 != 0, output_tokens=100, ttft_s=0.01)
    snap = stats.snapshot()
    assert (snap.calls, snap.errors, snap.in_flight, snap.window_calls) == (20, 5, 0, 10)
    # the window holds calls 10..19; of those, i = 12 and 16 failed
    assert snap.error_rate == pytest.approx(0.2)
    assert snap.latency_p50_ms == pytest.approx(nearest_rank([100.0 * (i + 1) for i in range(10, 20)], 0.5))
    assert snap.ttft_p50_ms == pytest.approx(10.0)
    assert snap.tokens_per_s_p50 > 0
    assert (snap.cost_per_1k_input_usd, snap.cost_per_1k_output_usd) == (0.5, 1.5)


def test_predicted_latency_uses_the_prior_until_warm_then_p95_plus_queueing() -> None:
    stats = BackendStats("b", window=64)
    assert stats.predicted_latency_ms(expected_ms=300, min_samples=8, max_concurrency=2) == 300
    rng = random.Random(1)
    samples = [rng.uniform(0.05, 0.15) for _ in range(50)]
    for s in samples:
        stats.begin()
        stats.end(s, ok=True)
    p95 = nearest_rank([s * 1000 for s in samples], 0.95)
    p50 = nearest_rank([s * 1000 for s in samples], 0.5)
    assert stats.predicted_latency_ms(expected_ms=300, min_samples=8, max_concurrency=2) == pytest.approx(p95)
    for _ in range(5):  # 5 in flight on 2 slots: a new call waits for (5 - 2 + 1) / 2 service times
        stats.begin()
    predicted = stats.predicted_latency_ms(expected_ms=300, min_samples=8, max_concurrency=2)
    assert predicted == pytest.approx(p95 + 2 * p50)
