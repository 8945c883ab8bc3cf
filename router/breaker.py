"""Circuit breaker per backend: open on the error rate, half-open probes, cooldown on 429/503.

States::

    closed ──error rate ≥ threshold over ≥ min_calls──► open ──open_s passed──► half_open
      ▲                                                  ▲                         │
      └──────────── probe succeeded ─────────────────────┼──── probe failed ───────┘

A 429 or 503 does not open the breaker by itself: it starts a *cooldown* for the server's
``Retry-After`` (capped), during which the backend is skipped, closed or not. Times come from the
clock passed in, so tests drive the state machine without sleeping.
"""

from __future__ import annotations

from typing import Literal

from raygent.core.routing import BreakerSpec

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]

# Cooldown for a 429/503 that came without Retry-After: long enough to stop a retry storm, short
# enough that a backend which recovered is used again within a second.
DEFAULT_COOLDOWN_S = 1.0


class CircuitBreaker:
    """One backend's breaker. Not thread-safe by design: the router's event loop is its only user.

    Args:
        spec: Thresholds and timings from the fleet file.
    """

    __slots__ = (
        "_errors",
        "_filled",
        "_next",
        "_outcomes",
        "_probes",
        "_spec",
        "cooldown_until",
        "open_until",
        "opened_count",
        "state",
    )

    def __init__(self, spec: BreakerSpec) -> None:
        self._spec = spec
        self._outcomes = bytearray(spec.window_calls)
        self._next = 0
        self._filled = 0
        self._errors = 0
        self._probes = 0
        self.state: BreakerState = "closed"
        self.open_until = 0.0
        self.cooldown_until = 0.0
        self.opened_count = 0

    def blocked_until(self, now: float) -> float | None:
        """When the backend may be tried again, or None when it may be tried now (no side effects)."""
        until = self.cooldown_until if self.cooldown_until > now else 0.0
        if self.state == "open" and self.open_until > now:
            until = max(until, self.open_until)
        elif self.state == "half_open" and self._probes >= self._spec.half_open_probes:
            until = max(until, now + self._spec.open_s)
        return until or None

    def acquire(self, now: float) -> bool:
        """Take permission for one call now; a half-open breaker admits ``half_open_probes`` at once."""
        if self.cooldown_until > now:
            return False
        if self.state == "open":
            if self.open_until > now:
                return False
            self.state = "half_open"
            self._probes = 0
        if self.state == "half_open":
            if self._probes >= self._spec.half_open_probes:
                return False
            self._probes += 1
        return True

    def on_success(self, now: float) -> None:
        if self.state == "half_open":
            self._close()
            return
        self._record(0, now)

    def on_failure(self, now: float) -> None:
        if self.state == "half_open":
            self._open(now)
            return
        self._record(1, now)

    def on_cooldown(self, now: float, retry_after_s: float | None) -> None:
        """The backend said 429/503: skip it for ``Retry-After`` (capped), and count the failure."""
        wait_s = DEFAULT_COOLDOWN_S if retry_after_s is None else retry_after_s
        self.cooldown_until = max(self.cooldown_until, now + min(wait_s, self._spec.max_cooldown_s))
        if self.state == "half_open":
            # The probe got an answer, just not a yes: back to closed-with-cooldown, not open.
            self._probes = max(0, self._probes - 1)
            return
        self._record(1, now)

    def release(self) -> None:
        """A call that got permission ended without an outcome for the backend (cancelled)."""
        if self.state == "half_open":
            self._probes = max(0, self._probes - 1)

    @property
    def error_rate(self) -> float:
        return self._errors / self._filled if self._filled else 0.0

    def _record(self, error: int, now: float) -> None:
        size = len(self._outcomes)
        if self._filled == size:
            self._errors -= self._outcomes[self._next]
        else:
            self._filled += 1
        self._outcomes[self._next] = error
        self._errors += error
        self._next = (self._next + 1) % size
        spec = self._spec
        tripped = self._errors >= spec.error_rate_threshold * self._filled
        if error and self._filled >= spec.min_calls and tripped:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = "open"
        self.open_until = now + self._spec.open_s
        self.opened_count += 1
        self._probes = 0

    def _close(self) -> None:
        self.state = "closed"
        self._probes = 0
        self._outcomes = bytearray(len(self._outcomes))
        self._filled = self._errors = self._next = 0
