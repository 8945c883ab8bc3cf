"""Live per-backend statistics: sliding-window latency percentiles, TTFT, tokens/s, errors, in-flight.

Every structure is preallocated at a fixed size and updated in place, so recording a call allocates
nothing but the float it stores, and reading a percentile is one index into an already sorted window.
There are no locks: the router actor updates and reads the stats from its one event-loop thread, and an
``async`` method never yields between a read and the write that depends on it.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort
from dataclasses import dataclass

__all__ = ["BackendStats", "StatsSnapshot", "Window"]


class Window:
    """The last ``size`` samples, in arrival order (a ring) and in value order (for percentiles).

    Args:
        size: Samples kept; the oldest one drops when a new one arrives.
    """

    __slots__ = ("_count", "_next", "_ring", "_size", "_sorted", "_total")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a window needs at least one slot")
        self._size = size
        self._ring = array("d", bytes(8 * size))
        self._sorted: list[float] = []
        self._next = 0
        self._count = 0
        self._total = 0.0

    def __len__(self) -> int:
        return self._count

    def add(self, value: float) -> None:
        """Record one sample: O(log n) search plus a memmove of at most ``size`` pointers."""
        if self._count == self._size:
            old = self._ring[self._next]
            del self._sorted[bisect_left(self._sorted, old)]
            self._total -= old
        else:
            self._count += 1
        self._ring[self._next] = value
        self._next = (self._next + 1) % self._size
        insort(self._sorted, value)
        self._total += value

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile for ``q`` in [0, 1]; 0.0 when empty."""
        n = self._count
        if n == 0:
            return 0.0
        return self._sorted[min(n - 1, int(q * n))]

    def mean(self) -> float:
        return self._total / self._count if self._count else 0.0


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """A consistent copy of one backend's stats, for reports, spans and the benchmarks."""

    backend: str
    calls: int
    errors: int
    in_flight: int
    window_calls: int
    error_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    tokens_per_s_p50: float
    cost_per_1k_input_usd: float
    cost_per_1k_output_usd: float


class BackendStats:
    """One backend's live statistics, updated on every call.

    Args:
        name: The backend's fleet key.
        window: Calls kept for latency, throughput and error rate.
        cost_per_1k_input_usd: Price of 1000 prompt tokens (static, from the fleet).
        cost_per_1k_output_usd: Price of 1000 completion tokens.
    """

    __slots__ = (
        "_outcomes",
        "_outcomes_next",
        "_window_calls",
        "_window_errors",
        "calls",
        "cost_per_1k_input_usd",
        "cost_per_1k_output_usd",
        "errors",
        "in_flight",
        "latency_ms",
        "name",
        "tokens_per_s",
        "ttft_ms",
    )

    def __init__(
        self,
        name: str,
        *,
        window: int = 256,
        cost_per_1k_input_usd: float = 0.0,
        cost_per_1k_output_usd: float = 0.0,
    ) -> None:
        self.name = name
        self.cost_per_1k_input_usd = cost_per_1k_input_usd
        self.cost_per_1k_output_usd = cost_per_1k_output_usd
        self.latency_ms = Window(window)
        self.ttft_ms = Window(window)
        self.tokens_per_s = Window(window)
        self.calls = 0
        self.errors = 0
        self.in_flight = 0
        # One byte per call: 1 = error. The running count makes the error rate O(1) to read.
        self._outcomes = bytearray(window)
        self._outcomes_next = 0
        self._window_calls = 0
        self._window_errors = 0

    def begin(self) -> None:
        """A call starts (counts towards in-flight until :meth:`end`)."""
        self.in_flight += 1

    def end(
        self,
        latency_s: float,
        *,
        ok: bool,
        output_tokens: int = 0,
        ttft_s: float | None = None,
    ) -> None:
        """A call ended; a timeout is recorded as an error with the time it took.

        Args:
            latency_s: Wall time of the call.
            ok: False for any failure the backend is to blame for.
            output_tokens: Completion tokens, for tokens/s (successful calls only).
            ttft_s: Time to the first streamed token, where the call streamed.
        """
        self.in_flight -= 1
        self.calls += 1
        latency_ms = latency_s * 1000.0
        self.latency_ms.add(latency_ms)
        if ttft_s is not None:
            self.ttft_ms.add(ttft_s * 1000.0)
        if ok and output_tokens > 0 and latency_s > 0:
            self.tokens_per_s.add(output_tokens / latency_s)
        error = 0 if ok else 1
        self.errors += error
        slot = self._outcomes_next
        size = len(self._outcomes)
        if self._window_calls == size:
            self._window_errors -= self._outcomes[slot]
        else:
            self._window_calls += 1
        self._outcomes[slot] = error
        self._window_errors += error
        self._outcomes_next = (slot + 1) % size

    @property
    def error_rate(self) -> float:
        """Errors over the calls in the window; 0.0 before any call."""
        return self._window_errors / self._window_calls if self._window_calls else 0.0

    def predicted_latency_ms(self, *, expected_ms: float, min_samples: int, max_concurrency: int) -> float:
        """What the next call should take: live p95 (or ``expected_ms`` while cold) plus queueing.

        Queueing: with ``in_flight`` at or above ``max_concurrency`` the new call waits for
        ``(in_flight - max_concurrency + 1) / max_concurrency`` service times (the median).
        """
        window = self.latency_ms
        if len(window) >= min_samples:
            p95 = window.percentile(0.95)
            service_ms = window.percentile(0.5)
        else:
            p95 = service_ms = expected_ms
        waiting = self.in_flight - max_concurrency + 1
        if waiting > 0:
            return p95 + waiting / max_concurrency * service_ms
        return p95

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(
            backend=self.name,
            calls=self.calls,
            errors=self.errors,
            in_flight=self.in_flight,
            window_calls=self._window_calls,
            error_rate=self.error_rate,
            latency_p50_ms=self.latency_ms.percentile(0.5),
            latency_p95_ms=self.latency_ms.percentile(0.95),
            latency_p99_ms=self.latency_ms.percentile(0.99),
            ttft_p50_ms=self.ttft_ms.percentile(0.5),
            ttft_p95_ms=self.ttft_ms.percentile(0.95),
            tokens_per_s_p50=self.tokens_per_s.percentile(0.5),
            cost_per_1k_input_usd=self.cost_per_1k_input_usd,
            cost_per_1k_output_usd=self.cost_per_1k_output_usd,
        )
