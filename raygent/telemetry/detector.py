"""Anomaly detection over the metric stream: pure, deterministic, one event at a time.

Three rules, each optional (see :class:`~raygent.core.obsconfig.DetectorSpec`):

- **token_spike** — a model call's tokens against its agent's recent calls, by robust z-score
  ``0.6745 (x - median) / MAD``; it must also be ``min_ratio`` times the median, so a tight baseline
  (tiny MAD) does not turn a modest rise into an alarm. The call's session and agent are the subjects.
  Flagged calls are kept out of the baseline, so a burst of spikes cannot teach the detector that
  spikes are normal.
- **tool_errors** — per tool, a Bernoulli CUSUM of ``log(p1/p0)`` for a failure and
  ``log((1-p1)/(1-p0))`` for a success (``p0`` baseline, ``p1`` alert rate); it fires when the sum passes
  ``threshold``, the sequential test with the shortest expected delay for that shift at a given
  false-alarm rate (Page, 1954).
- **latency_slo** — per model, tool and agent (HTTP), p95/p99 by nearest rank over a sliding window,
  compared with the SLO once ``min_samples`` are in.

Every rule has a cooldown per subject so one incident yields one detection, not one per event.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from raygent.core.obsconfig import DetectorSpec, LatencySloSpec, TokenSpikeSpec, ToolErrorSpec
from raygent.telemetry.metrics import MetricEvent

__all__ = ["AnomalyDetector", "Detection", "DetectorName", "RollingWindow"]

DetectorName = Literal["token_spike", "tool_errors", "latency_slo"]
_MAD_SCALE = 0.6745  # makes MAD-based z comparable with a normal distribution's z


@dataclass(frozen=True, slots=True)
class Detection:
    """One anomaly: which rule, on what subject, how far over, and the actions configured for it."""

    detector: DetectorName
    key: str  # the subject: agent, "tool:<name>", "model:<name>"
    agent: str
    session_id: str
    run_id: str
    ts: float
    value: float
    threshold: float
    detail: str
    actions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "detector": self.detector,
            "key": self.key,
            "agent": self.agent,
            "session_id": self.session_id,
            "run_id": self.run_id,
            "ts": self.ts,
            "value": round(self.value, 6),
            "threshold": round(self.threshold, 6),
            "detail": self.detail,
            "actions": list(self.actions),
        }


class RollingWindow:
    """The last ``size`` values, kept sorted too, for O(log n) order statistics."""

    def __init__(self, size: int) -> None:
        self._order: deque[float] = deque()
        self._sorted: list[float] = []
        self._size = size

    def __len__(self) -> int:
        return len(self._order)

    def add(self, value: float) -> None:
        self._order.append(value)
        bisect.insort(self._sorted, value)
        if len(self._order) > self._size:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile (``q`` in (0, 1]); the window must not be empty."""
        rank = max(1, math.ceil(q * len(self._sorted)))
        return self._sorted[rank - 1]

    def median(self) -> float:
        n = len(self._sorted)
        mid = n // 2
        return self._sorted[mid] if n % 2 else (self._sorted[mid - 1] + self._sorted[mid]) / 2

    def mad(self, median: float) -> float:
        deviations = sorted(abs(v - median) for v in self._sorted)
        n = len(deviations)
        mid = n // 2
        return deviations[mid] if n % 2 else (deviations[mid - 1] + deviations[mid]) / 2


@dataclass(slots=True)
class _Cusum:
    score: float = 0.0
    events: int = 0


@dataclass(slots=True)
class _State:
    tokens: dict[str, RollingWindow] = field(default_factory=dict)
    cusum: dict[str, _Cusum] = field(default_factory=dict)
    latency: dict[str, RollingWindow] = field(default_factory=dict)
    last_fired: dict[tuple[str, str], float] = field(default_factory=dict)


class AnomalyDetector:
    """Feeds each :class:`MetricEvent` to the configured rules; returns what they detected.

    Args:
        spec: The fleet's ``telemetry.detector`` section.
    """

    def __init__(self, spec: DetectorSpec) -> None:
        self._spec = spec
        self._state = _State()
        if spec.tool_errors is not None:
            p0, p1 = spec.tool_errors.baseline_rate, spec.tool_errors.alert_rate
            self._llr_fail = math.log(p1 / p0)
            self._llr_ok = math.log((1 - p1) / (1 - p0))

    def observe(self, event: MetricEvent) -> list[Detection]:
        """Update every rule with ``event``; the detections it caused (usually none)."""
        found: list[Detection] = []
        spec = self._spec
        if spec.token_spike is not None and event.kind == "model" and not event.error:
            found.extend(self._token_spike(spec.token_spike, event))
        if spec.tool_errors is not None and event.kind == "tool":
            found.extend(self._tool_errors(spec.tool_errors, event))
        if spec.latency_slo is not None and not event.error and event.status < 400:
            found.extend(self._latency(spec.latency_slo, event))
        return found

    def _cooled(self, detector: str, key: str, ts: float, cooldown_s: float) -> bool:
        last = self._state.last_fired.get((detector, key))
        if last is not None and ts - last < cooldown_s:
            return False
        self._state.last_fired[(detector, key)] = ts
        return True

    def _token_spike(self, rule: TokenSpikeSpec, e: MetricEvent) -> list[Detection]:
        window = self._state.tokens.setdefault(e.agent, RollingWindow(rule.window))
        tokens = float(e.input_tokens + e.output_tokens)
        if len(window) >= rule.min_samples:
            median = window.median()
            # A floor on the MAD: identical calls (MAD 0) would make any change infinitely surprising.
            mad = max(window.mad(median), 0.01 * median, 1.0)
            z = _MAD_SCALE * (tokens - median) / mad
            if z >= rule.z_threshold and tokens >= rule.min_ratio * median:
                key = f"{e.agent}:{e.session_id}"
                if not self._cooled("token_spike", key, e.ts, rule.cooldown_s):
                    return []
                detail = (
                    f"{int(tokens)} tokens in one call of agent {e.agent!r} (median {median:.0f}, "
                    f"robust z {z:.1f} >= {rule.z_threshold})"
                )
                return [self._detection("token_spike", e.agent, e, z, rule.z_threshold, detail, rule.actions)]
        window.add(tokens)
        return []

    def _tool_errors(self, rule: ToolErrorSpec, e: MetricEvent) -> list[Detection]:
        state = self._state.cusum.setdefault(e.name, _Cusum())
        state.events += 1
        state.score = max(0.0, state.score + (self._llr_fail if e.error else self._llr_ok))
        if state.score < rule.threshold:
            return []
        score, state.score = state.score, 0.0  # restart the test after an alarm
        if not self._cooled("tool_errors", e.name, e.ts, rule.cooldown_s):
            return []
        detail = (
            f"tool {e.name!r} fails more often than {rule.baseline_rate:.0%} (CUSUM {score:.1f} >= "
            f"{rule.threshold} towards {rule.alert_rate:.0%})"
        )
        return [
            self._detection("tool_errors", f"tool:{e.name}", e, score, rule.threshold, detail, rule.actions)
        ]

    def _latency(self, rule: LatencySloSpec, e: MetricEvent) -> list[Detection]:
        key = f"{e.kind}:{e.name}" if e.kind != "http" else f"agent:{e.agent}"
        window = self._state.latency.setdefault(key, RollingWindow(rule.window))
        window.add(e.latency_s * 1000.0)
        if len(window) < rule.min_samples:
            return []
        for q, slo in ((0.99, rule.p99_ms), (0.95, rule.p95_ms)):
            if slo is None:
                continue
            value = window.quantile(q)
            if value > slo:
                if not self._cooled("latency_slo", key, e.ts, rule.cooldown_s):
                    return []
                label = f"p{round(q * 100)}"
                detail = (
                    f"{label} latency of {key} is {value:.0f} ms over the last {len(window)} calls "
                    f"(SLO {slo:.0f} ms)"
                )
                return [self._detection("latency_slo", key, e, value, slo, detail, rule.actions)]
        return []

    @staticmethod
    def _detection(
        detector: DetectorName,
        key: str,
        e: MetricEvent,
        value: float,
        threshold: float,
        detail: str,
        actions: Sequence[str],
    ) -> Detection:
        return Detection(
            detector=detector,
            key=key,
            agent=e.agent,
            session_id=e.session_id,
            run_id=e.run_id,
            ts=e.ts,
            value=value,
            threshold=threshold,
            detail=detail,
            actions=tuple(actions),
        )
