"""The anomaly detector on seeded traffic: injected anomalies are found within a stated number of
events, and 10,000 normal events raise (almost) nothing."""

from __future__ import annotations

import random

from raygent.core.obsconfig import DetectorSpec, LatencySloSpec, TokenSpikeSpec, ToolErrorSpec
from raygent.telemetry.detector import AnomalyDetector, RollingWindow
from raygent.telemetry.metrics import MetricEvent

NORMAL_EVENTS = 10_000
# Stated bounds (the docs quote them): a 10x spike on the first spiked call (3 seeds);
# 1% -> 30% tool errors within
# 40 calls of the change; a p99 breach within 3 slow calls; false positives on 10,000 normal events at
# most 0.1% (token spikes) and none (tool errors, latency).
SPIKE_WITHIN = 1
ERRORS_WITHIN = 40
P99_WITHIN = 3
MAX_FALSE_POSITIVE_RATE = 0.001


def model_event(rng: random.Random, i: int, *, scale: float = 1.0, session: str = "") -> MetricEvent:
    tokens = int(rng.lognormvariate(6.5, 0.25) * scale)  # ~665 tokens, a realistic spread
    return MetricEvent(
        "model",
        "support",
        "premium",
        0.05,
        float(i),
        session_id=session or f"ses-{i % 50}",
        run_id=f"run-{i}",
        input_tokens=tokens,
        output_tokens=tokens // 8,
    )


def tool_event(rng: random.Random, i: int, error_rate: float) -> MetricEvent:
    return MetricEvent("tool", "orders", "lookup_order", 0.01, float(i), error=rng.random() < error_rate)


def latency_event(rng: random.Random, i: int, *, slow: bool = False) -> MetricEvent:
    ms = rng.uniform(1500, 2500) if slow else rng.lognormvariate(4.0, 0.3)  # normal: ~55 ms, p99 ~110 ms
    return MetricEvent("model", "support", "premium", ms / 1000, float(i))


def test_rolling_window_order_statistics() -> None:
    window = RollingWindow(5)
    for value in (5, 1, 4, 2, 3, 100):
        window.add(value)
    assert len(window) == 5  # the 5 fell out
    assert window.median() == 3 and window.quantile(1.0) == 100 and window.quantile(0.2) == 1
    assert window.mad(3) == 1


def test_token_spike_of_ten_times_is_detected_on_the_first_spiked_call() -> None:
    for seed in range(3):
        rng = random.Random(seed)
        detector = AnomalyDetector(DetectorSpec(token_spike=TokenSpikeSpec(actions=["quarantine"])))
        false_positives = sum(len(detector.observe(model_event(rng, i))) for i in range(NORMAL_EVENTS))
        assert false_positives <= MAX_FALSE_POSITIVE_RATE * NORMAL_EVENTS
        found = []
        for j in range(SPIKE_WITHIN):
            found = detector.observe(model_event(rng, NORMAL_EVENTS + j, scale=10, session="ses-bad"))
            if found:
                break
        assert len(found) == 1, f"seed {seed}: a 10x spike went unnoticed"
        spike = found[0]
        assert spike.detector == "token_spike" and spike.session_id == "ses-bad" and spike.agent == "support"
        assert spike.actions == ("quarantine",) and spike.value >= 8


def test_token_spike_is_per_agent_and_spikes_do_not_poison_the_baseline() -> None:
    rng = random.Random(7)
    detector = AnomalyDetector(DetectorSpec(token_spike=TokenSpikeSpec(cooldown_s=0)))
    for i in range(300):
        detector.observe(model_event(rng, i))
    # A different agent whose calls are 10x bigger is its own baseline, not a spike of "support".
    big = [
        MetricEvent("model", "refunds", "premium", 0.05, float(1000 + i), input_tokens=7000 + i)
        for i in range(100)
    ]
    assert all(not detector.observe(e) for e in big)
    # Twenty spikes in a row are all reported: none of them became "normal".
    spikes = [detector.observe(model_event(rng, 2000 + i, scale=10, session=f"s{i}")) for i in range(20)]
    assert all(len(found) == 1 for found in spikes)


def test_tool_error_rate_rising_from_1_to_30_percent_is_detected_within_40_calls() -> None:
    delays = []
    for seed in range(10):
        rng = random.Random(seed)
        detector = AnomalyDetector(DetectorSpec(tool_errors=ToolErrorSpec(actions=["throttle"])))
        false_positives = sum(len(detector.observe(tool_event(rng, i, 0.01))) for i in range(NORMAL_EVENTS))
        assert false_positives == 0, f"seed {seed}"
        for j in range(1, ERRORS_WITHIN + 1):
            found = detector.observe(tool_event(rng, NORMAL_EVENTS + j, 0.30))
            if found:
                assert found[0].detector == "tool_errors" and found[0].key == "tool:lookup_order"
                assert found[0].actions == ("throttle",) and found[0].agent == "orders"
                delays.append(j)
                break
        else:
            raise AssertionError(f"seed {seed}: 30% errors not detected within {ERRORS_WITHIN} calls")
    assert len(delays) == 10


def test_p99_breach_is_detected_within_three_slow_calls_and_not_before() -> None:
    rng = random.Random(3)
    detector = AnomalyDetector(DetectorSpec(latency_slo=LatencySloSpec(p99_ms=1000, actions=["reroute"])))
    assert sum(len(detector.observe(latency_event(rng, i))) for i in range(NORMAL_EVENTS)) == 0
    found = []
    for j in range(1, P99_WITHIN + 1):
        found = detector.observe(latency_event(rng, NORMAL_EVENTS + j, slow=True))
        if found:
            break
    assert found and found[0].detector == "latency_slo" and found[0].key == "model:premium"
    assert found[0].value > 1000 and found[0].threshold == 1000 and found[0].actions == ("reroute",)


def test_p95_slo_and_min_samples() -> None:
    detector = AnomalyDetector(DetectorSpec(latency_slo=LatencySloSpec(p95_ms=100, min_samples=50)))
    slow = [MetricEvent("tool", "a", "t", 0.5, float(i)) for i in range(49)]
    assert all(not detector.observe(e) for e in slow)  # too few samples to judge
    assert detector.observe(MetricEvent("tool", "a", "t", 0.5, 50.0))[0].detail.startswith("p95")


def test_cooldown_gives_one_detection_per_incident() -> None:
    detector = AnomalyDetector(
        DetectorSpec(latency_slo=LatencySloSpec(p99_ms=10, min_samples=5, cooldown_s=60))
    )
    hits = [len(detector.observe(MetricEvent("tool", "a", "t", 1.0, float(i)))) for i in range(100)]
    assert sum(hits) == 2  # at t=4 and again at t=64, once the cooldown ran out
