"""Rate limits in the ingress: a token bucket per agent and caller (or tenant, or the whole agent).

The bucket of a key holds up to ``burst`` tokens and refills at ``requests_per_s``; each run request
takes one. A request that finds the bucket empty is refused with
:class:`~raygent.core.errors.RateLimitedError` (429) whose ``Retry-After`` is the time until the next
token, before anything is recorded — like a 503 of admission control, it leaves no run behind and does
not use the idempotency key.

Buckets live in the ingress replica's memory (like admission counters): with several ingress replicas
the fleet-wide rate is the sum. The number of buckets is bounded (least recently used evicted), so a
flood of distinct callers cannot grow memory without end; an evicted caller starts with a full bucket,
which can only let through what one fresh caller could anyway.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from raygent.core.config import AgentSpec, RateLimitSpec
from raygent.core.errors import RateLimitedError

__all__ = ["RateLimiter", "bucket_key"]

_MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


def bucket_key(spec: RateLimitSpec, *, caller: str, tenant: str) -> str:
    """Whose bucket a request takes from, by the limit's ``per``."""
    if spec.per == "agent":
        return "*"
    if spec.per == "tenant":
        return f"tenant:{tenant}"
    return f"caller:{caller}"


class RateLimiter:
    """Token buckets of every rate-limited agent of a fleet.

    Args:
        limits: The rate limit of each agent that has one.
        clock: Monotonic seconds (tests pass a fake one).
        max_buckets: Buckets kept before the least recently used is dropped.
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimitSpec],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = _MAX_BUCKETS,
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self.refused: dict[str, int] = dict.fromkeys(self._limits, 0)

    @classmethod
    def for_agents(cls, agents: Mapping[str, AgentSpec], default: RateLimitSpec | None) -> RateLimiter:
        """Each agent's own ``rate_limit``, else the server's default."""
        limits = {name: spec.rate_limit or default for name, spec in agents.items()}
        return cls({name: limit for name, limit in limits.items() if limit is not None})

    def take(self, agent: str, *, caller: str, tenant: str = "default") -> None:
        """Take one token from the request's bucket.

        Raises:
            RateLimitedError: The bucket is empty; ``retry_after_s`` is when the next token comes.
        """
        spec = self._limits.get(agent)
        if spec is None:
            return
        now = self._clock()
        key = (agent, bucket_key(spec, caller=caller, tenant=tenant))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(spec.capacity, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(spec.capacity, bucket.tokens + elapsed * spec.requests_per_s)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        self.refused[agent] += 1
        wait_s = (1.0 - bucket.tokens) / spec.requests_per_s
        raise RateLimitedError(
            f"too many requests to agent {agent!r}: the limit is {spec.requests_per_s:g} per second "
            f"(burst {spec.capacity:g}) per {spec.per}; retry in {wait_s:.2f} s",
            # Retry-After is whole seconds on the wire; never tell a client to retry at once.
            retry_after_s=float(max(1, math.ceil(wait_s))),
            extra={"agent": agent, "per": spec.per, "requests_per_s": spec.requests_per_s},
        )

    def stats(self) -> dict[str, dict[str, float | int | str]]:
        """Per limited agent: the configured rate and the requests refused so far."""
        return {
            agent: {
                "requests_per_s": spec.requests_per_s,
                "burst": spec.capacity,
                "per": spec.per,
                "refused": self.refused[agent],
            }
            for agent, spec in self._limits.items()
        }
