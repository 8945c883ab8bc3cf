"""The budget ledger on Redis: reserve, commit and refund are Lua scripts, so each runs atomically.

Redis runs one script at a time, so the check of every scope's balance and the reservation on all of
them happen with no other command in between, whatever the number of router replicas. Every key shares
the hash tag ``{prefix}`` so the scripts stay in one slot on a Redis Cluster too. A scope is a hash
(``st``/``sn`` spent tokens/nano-USD, ``rt``/``rn`` reserved); a reservation is a hash with its scopes,
and a sorted set by expiry lets any later reservation reclaim ones that were never settled.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from raygent.core.budget.base import Limit, ScopeSpend, budget_error, to_nanos, to_usd
from raygent.core.clock import Clock, SystemClock
from raygent.core.errors import ConflictError, StoreError

__all__ = ["RedisLedger"]

# Shared by the scripts: release reservation `rkey` (id `rid`) from every scope it holds; returns the
# scope keys it held (empty when unknown).
_RELEASE = """
local function release(rkey, zkey, rid)
  local res = redis.call('HMGET', rkey, 'scopes', 't', 'n')
  if not res[1] then return {} end
  local scopes = {}
  for scope in string.gmatch(res[1], '[^\\n]+') do
    -- '%d' keeps integers exact (Lua's default number format would write 1e+15 or -0)
    redis.call('HINCRBY', scope, 'rt', string.format('%d', 0 - tonumber(res[2])))
    redis.call('HINCRBY', scope, 'rn', string.format('%d', 0 - tonumber(res[3])))
    table.insert(scopes, scope)
  end
  redis.call('DEL', rkey)
  redis.call('ZREM', zkey, rid)
  return scopes
end
"""

# KEYS: expiry zset, reservation hash, scope hashes...
# ARGV: tokens, nanos, now, expires_at, reservation id, reservation key prefix, then per scope
#       max_tokens, max_nanos (-1: unlimited)
_RESERVE = (
    _RELEASE
    + """
local tokens = tonumber(ARGV[1])
local nanos = tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, 64)
for _, rid in ipairs(expired) do release(ARGV[6] .. rid, KEYS[1], rid) end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'conflict', 0, 0} end
for i = 3, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'st', 'sn', 'rt', 'rn')
  local used_t = (tonumber(h[1]) or 0) + (tonumber(h[3]) or 0)
  local used_n = (tonumber(h[2]) or 0) + (tonumber(h[4]) or 0)
  local max_t = tonumber(ARGV[7 + (i - 3) * 2])
  local max_n = tonumber(ARGV[8 + (i - 3) * 2])
  if max_t >= 0 and used_t + tokens > max_t then return {'tokens', i - 3, used_t} end
  if max_n >= 0 and used_n + nanos > max_n then return {'usd', i - 3, used_n} end
end
local scopes = {}
for i = 3, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'rt', ARGV[1])
  redis.call('HINCRBY', KEYS[i], 'rn', ARGV[2])
  table.insert(scopes, KEYS[i])
end
redis.call('HSET', KEYS[2], 'scopes', table.concat(scopes, '\\n'), 't', ARGV[1], 'n', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[5])
return {'ok', 0, 0}
"""
)

# KEYS: expiry zset, reservation hash. ARGV: reservation id, tokens, nanos (commit) or nothing (refund).
_SETTLE = (
    _RELEASE
    + """
local scopes = release(KEYS[2], KEYS[1], ARGV[1])
if ARGV[2] then
  for _, scope in ipairs(scopes) do
    redis.call('HINCRBY', scope, 'st', ARGV[2])
    redis.call('HINCRBY', scope, 'sn', ARGV[3])
  end
end
return #scopes
"""
)


class RedisLedger:
    """:class:`~raygent.core.budget.base.BudgetLedger` on Redis, shared by every process of a cluster.

    Args:
        url: ``redis://host:port/db``.
        key_prefix: Namespace of every key (wrapped in a hash tag).
        reservation_ttl_s: A reservation neither committed nor refunded is released after this.
        clock: Wall clock for reservation expiry.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "raygent:budget",
        reservation_ttl_s: float = 300.0,
        clock: Clock | None = None,
    ) -> None:
        self._url = url
        self._prefix = key_prefix
        self._base = "{" + key_prefix + "}"
        self._ttl_s = reservation_ttl_s
        self._clock: Clock = clock or SystemClock()
        self._redis = aioredis.Redis.from_url(url)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self._url, self._prefix, self._ttl_s, self._clock))

    def _scope_key(self, scope: str) -> str:
        return f"{self._base}:scope:{scope}"

    async def reserve(self, reservation_id: str, limits: list[Limit], *, tokens: int, usd: float) -> None:
        nanos = to_nanos(usd)
        now = self._clock.now()
        keys = [f"{self._base}:expiry", f"{self._base}:res:{reservation_id}"]
        keys += [self._scope_key(limit.scope) for limit in limits]
        args: list[Any] = [tokens, nanos, now, now + self._ttl_s, reservation_id, f"{self._base}:res:"]
        for limit in limits:
            args += [
                -1 if limit.max_tokens is None else limit.max_tokens,
                -1 if limit.max_usd is None else to_nanos(limit.max_usd),
            ]
        result = await self._call(self._reserve, keys, args)
        verdict = result[0].decode() if isinstance(result[0], bytes) else str(result[0])
        if verdict == "ok":
            return
        if verdict == "conflict":
            raise ConflictError(f"budget reservation {reservation_id!r} is already open")
        limit = limits[int(result[1])]
        used = int(result[2])
        # The script only names a limit that is set; ``or 0`` is for the type checker.
        if verdict == "tokens":
            cap = float(limit.max_tokens or 0)
            raise budget_error(limit.scope, what="tokens", limit=cap, used=used, wanted=tokens)
        cap = float(limit.max_usd or 0.0)
        raise budget_error(limit.scope, what="usd", limit=cap, used=to_usd(used), wanted=usd)

    async def commit(self, reservation_id: str, *, tokens: int, usd: float) -> None:
        keys = [f"{self._base}:expiry", f"{self._base}:res:{reservation_id}"]
        await self._call(self._settle, keys, [reservation_id, tokens, to_nanos(usd)])

    async def refund(self, reservation_id: str) -> None:
        keys = [f"{self._base}:expiry", f"{self._base}:res:{reservation_id}"]
        await self._call(self._settle, keys, [reservation_id])

    async def spend(self, scope: str) -> ScopeSpend:
        try:
            st, sn, rt, rn = await self._redis.hmget(self._scope_key(scope), ["st", "sn", "rt", "rn"])
        except aioredis.RedisError as exc:
            raise StoreError(f"budget ledger at {self._url} failed: {exc}") from exc
        return ScopeSpend(scope, int(st or 0), to_usd(int(sn or 0)), int(rt or 0), to_usd(int(rn or 0)))

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except aioredis.RedisError as exc:
            raise StoreError(f"budget ledger at {self._url} failed: {exc}") from exc


def _reopen(url: str, prefix: str, ttl_s: float, clock: Clock) -> RedisLedger:
    return RedisLedger(url, key_prefix=prefix, reservation_ttl_s=ttl_s, clock=clock)
