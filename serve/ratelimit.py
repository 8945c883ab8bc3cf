"""Rate limits in the ingress: a token bucket per agent and caller (or tenant, or the whole agent).

The bucket of a key holds up to ``burst`` tokens and refills at ``requests_per_s``; each run request
takes one. A request that finds the bucket empty is refused with
:class:`~raygent.core.errors.RateLimitedError` (429) whose ``Retry-After`` is the time until the next
token, before anything is recorded — like a 503 of admission control, it leaves no run behind and does
not use the idempotency key.

Where the buckets live: in a fleet whose store is Redis, in that Redis (:class:`SharedRateLimiter`:
one Lua script per request refills and takes atomically on Redis' clock), so the limit holds for the
whole fleet however many ingress replicas on however many machines serve it. Otherwise in the ingress
replica's memory (:class:`RateLimiter`, like the admission counters): with several ingress replicas
the fleet-wide rate is then the sum. The number of in-memory buckets is bounded (least recently used
evicted), so a flood of distinct callers cannot grow memory without end; an evicted caller starts with
a full bucket, which can only let through what one fresh caller could anyway. Redis buckets expire
once they would be full again.

An unreachable Redis does not refuse requests (the limit *fails open*, logged and counted): a rate
limit protects capacity, and the run itself then meets the store's own clear error.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from raygent.core.config import AgentSpec, RateLimitSpec
from raygent.core.errors import RateLimitedError, StoreError
from raygent.core.store.redis import redis_client, redis_errors_as_store_errors

__all__ = ["RateLimiter", "SharedRateLimiter", "agent_limits", "bucket_key"]

log = logging.getLogger("raygent.serve")

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
    def for_agents(
        cls, agents: Mapping[str, AgentSpec], default: RateLimitSpec | None, *, shares: int = 1
    ) -> RateLimiter:
        """Each agent's own ``rate_limit``, else the server's default; one of ``shares`` equal shares of
        it (each of that many ingress replicas keeping its own buckets)."""
        return cls({name: spec.share(shares) for name, spec in agent_limits(agents, default).items()})

    async def check(self, agent: str, *, caller: str, tenant: str = "default") -> None:
        """:meth:`take`, awaitable like :meth:`SharedRateLimiter.check` (the ingress awaits either)."""
        self.take(agent, caller=caller, tenant=tenant)

    async def close(self) -> None:
        """Nothing to release (buckets are in memory)."""

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
        raise _refusal(agent, spec, bucket.tokens)

    def stats(self) -> dict[str, dict[str, float | int | str]]:
        """Per limited agent: the configured rate and the requests refused so far (by this replica)."""
        return _stats(self._limits, self.refused)


def agent_limits(agents: Mapping[str, AgentSpec], default: RateLimitSpec | None) -> dict[str, RateLimitSpec]:
    """Each agent's own ``rate_limit``, else the server's default; agents with neither are not limited."""
    limits = {name: spec.rate_limit or default for name, spec in agents.items()}
    return {name: limit for name, limit in limits.items() if limit is not None}


def _stats(
    limits: Mapping[str, RateLimitSpec], refused: Mapping[str, int], **extra: float | int | str
) -> dict[str, dict[str, float | int | str]]:
    return {
        agent: {
            "requests_per_s": spec.requests_per_s,
            "burst": spec.capacity,
            "per": spec.per,
            "refused": refused[agent],
            **extra,
        }
        for agent, spec in limits.items()
    }


def _refusal(agent: str, spec: RateLimitSpec, tokens: float) -> RateLimitedError:
    wait_s = (1.0 - tokens) / spec.requests_per_s
    return RateLimitedError(
        f"too many requests to agent {agent!r}: the limit is {spec.requests_per_s:g} per second "
        f"(burst {spec.capacity:g}) per {spec.per}; retry in {wait_s:.2f} s",
        # Retry-After is whole seconds on the wire; never tell a client to retry at once.
        retry_after_s=float(max(1, math.ceil(wait_s))),
        extra={"agent": agent, "per": spec.per, "requests_per_s": spec.requests_per_s},
    )


# KEYS[1] the bucket hash. ARGV: rate (tokens/s), capacity, TTL in ms. Redis' own clock (TIME) is the
# one clock every replica shares; seconds and microseconds are kept apart so no precision is lost in
# Lua's number formatting. Returns {1 if a token was taken, tokens left after}.
_TAKE = """
local t = redis.call('TIME')
local h = redis.call('HMGET', KEYS[1], 'tokens', 's', 'us')
local rate, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens = cap
if h[1] then
  local elapsed = (tonumber(t[1]) - tonumber(h[2])) + (tonumber(t[2]) - tonumber(h[3])) / 1000000
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(cap, tonumber(h[1]) + elapsed * rate)
end
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 's', t[1], 'us', t[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {taken, tostring(tokens)}
"""


class SharedRateLimiter:
    """The same token buckets kept in the fleet's Redis: one limit for every ingress replica.

    Args:
        limits: The rate limit of each agent that has one.
        url: The fleet's Redis.
        namespace: Key prefix (the fleet's store namespace).
        op_timeout_s: Socket timeout of each call.
    """

    def __init__(
        self, limits: Mapping[str, RateLimitSpec], *, url: str, namespace: str, op_timeout_s: float = 5.0
    ) -> None:
        self._limits = dict(limits)
        self.url = url
        self._namespace = namespace
        self._r = redis_client(url, op_timeout_s=op_timeout_s)
        self._take = self._r.register_script(_TAKE)
        self.refused: dict[str, int] = dict.fromkeys(self._limits, 0)
        self.failed_open = 0

    def key(self, agent: str, *, caller: str, tenant: str = "default") -> str | None:
        """The Redis key of the request's bucket (``None``: the agent is not limited)."""
        spec = self._limits.get(agent)
        if spec is None:
            return None
        return ":".join((self._namespace, "rl", agent, bucket_key(spec, caller=caller, tenant=tenant)))

    async def check(self, agent: str, *, caller: str, tenant: str = "default") -> None:
        """Take one token from the request's bucket in Redis.

        Raises:
            RateLimitedError: The bucket is empty; ``retry_after_s`` is when the next token comes.
        """
        key = self.key(agent, caller=caller, tenant=tenant)
        if key is None:
            return
        spec = self._limits[agent]
        # A bucket left alone refills completely in capacity / rate seconds; after that it is as good
        # as absent, so Redis may forget it.
        ttl_ms = math.ceil(spec.capacity / spec.requests_per_s * 1000) + 1000
        try:
            async with redis_errors_as_store_errors(self.url, "rate-limit buckets"):
                args = [spec.requests_per_s, spec.capacity, ttl_ms]
                taken, tokens = await self._take(keys=[key], args=args)
        except StoreError as exc:
            self.failed_open += 1
            log.warning("rate limit of agent %s not applied (failing open): %s", agent, exc)
            return
        if int(taken) == 1:
            return
        self.refused[agent] += 1
        raise _refusal(agent, spec, float(tokens))

    def stats(self) -> dict[str, dict[str, float | int | str]]:
        """Per limited agent: the configured rate, refusals by this replica, and checks that failed open."""
        return _stats(self._limits, self.refused, shared="redis", failed_open=self.failed_open)

    async def close(self) -> None:
        await self._r.aclose()
