"""Pending-reply records in Redis, for fleets whose store is Redis (gateway replicas on several machines).

Same contract as :class:`~raygent.integrations.mq.pending.SQLitePendingReplies` (the same tests run
against both): a record per correlation id (a hash), and three sorted sets the sweeps read — pending
calls by creation, replied calls by reply time, every call by deadline. Each check-and-write (register,
first reply, expire) is one Lua script, so it is atomic across every gateway replica. Reply bodies stay
bytes end to end.
"""

from __future__ import annotations

import json
from typing import Any

from raygent.core.store.redis import redis_client
from raygent.core.store.redis_ledgers import guarded
from raygent.integrations.mq.envelope import Envelope
from raygent.integrations.mq.pending import PendingRecord

__all__ = ["RedisPendingReplies"]

# KEYS: record, pending zset, deadline zset. ARGV: cid, created_ts, deadline_ts, field/value pairs.
_REGISTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

# KEYS: record, pending zset, replied zset. ARGV: cid, now, body, headers, message id.
_REPLY = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'pending' then
  redis.call('HSET', KEYS[1], 'state', 'replied', 'replied_ts', ARGV[2], 'reply_body', ARGV[3],
             'reply_headers', ARGV[4], 'reply_message_id', ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
  return 1
end
if state then redis.call('HINCRBY', KEYS[1], 'duplicate_replies', 1) end
return 0
"""

# KEYS: record, pending zset. ARGV: cid.
_EXPIRE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'expired')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode()


def _record(cid: str, fields: dict[bytes, bytes]) -> PendingRecord:
    get = {k.decode(): v for k, v in fields.items()}.get
    body, replied = get("reply_body"), _text(get("replied_ts"))
    reply = None
    if body is not None:
        reply = Envelope(
            body=bytes(body),
            correlation_id=cid,
            message_id=_text(get("reply_message_id")),
            headers=json.loads(_text(get("reply_headers")) or "{}"),
        )
    return PendingRecord(
        correlation_id=cid,
        tool=_text(get("tool")),
        call_id=_text(get("call_id")),
        run_id=_text(get("run_id")),
        state=_text(get("state")),  # type: ignore[arg-type]
        created_ts=float(_text(get("created_ts")) or 0),
        deadline_ts=float(_text(get("deadline_ts")) or 0),
        replied_ts=float(replied) if replied else None,
        reply=reply,
        duplicate_replies=int(_text(get("duplicate_replies")) or 0),
    )


class RedisPendingReplies:
    """:class:`~raygent.integrations.mq.pending.PendingReplies` in Redis.

    Args:
        url: ``redis://…`` of the fleet's store.
        namespace: Key prefix (the fleet's Redis namespace plus the tool's name).
        op_timeout_s: Time limit of one command.
    """

    def __init__(self, url: str, *, namespace: str, op_timeout_s: float = 5.0) -> None:
        self.url, self.namespace = url, namespace
        self._r = redis_client(url, op_timeout_s=op_timeout_s)
        self._register = self._r.register_script(_REGISTER)
        self._reply = self._r.register_script(_REPLY)
        self._expire = self._r.register_script(_EXPIRE)

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, "mqp", *parts))

    async def _records(self, cids: list[bytes]) -> list[PendingRecord]:
        if not cids:
            return []
        pipe = self._r.pipeline(transaction=False)
        for cid in cids:
            pipe.hgetall(self._key("r", _text(cid)))
        rows = await pipe.execute()
        return [_record(_text(cid), row) for cid, row in zip(cids, rows, strict=True) if row]

    async def register(self, record: PendingRecord) -> tuple[PendingRecord, bool]:
        fields = {
            "tool": record.tool,
            "call_id": record.call_id,
            "run_id": record.run_id,
            "state": "pending",
            "created_ts": repr(record.created_ts),
            "deadline_ts": repr(record.deadline_ts),
            "duplicate_replies": "0",
        }
        args = [record.correlation_id, repr(record.created_ts), repr(record.deadline_ts)]
        args += [part for pair in fields.items() for part in pair]
        keys = [self._key("r", record.correlation_id), self._key("pending"), self._key("deadline")]
        async with guarded(self.url):
            inserted = await self._register(keys=keys, args=args)
            stored = await self.get(record.correlation_id)
        assert stored is not None  # just written or found
        return stored, bool(inserted)

    async def record_reply(self, reply: Envelope, *, now: float) -> PendingRecord | None:
        cid = reply.correlation_id
        keys = [self._key("r", cid), self._key("pending"), self._key("replied")]
        args: list[Any] = [cid, repr(now), reply.body, json.dumps(dict(reply.headers)), reply.message_id]
        async with guarded(self.url):
            first = await self._reply(keys=keys, args=args)
            return await self.get(cid) if first else None

    async def get(self, correlation_id: str) -> PendingRecord | None:
        async with guarded(self.url):
            fields = await self._r.hgetall(self._key("r", correlation_id))
        return _record(correlation_id, fields) if fields else None

    async def expire(self, correlation_id: str) -> None:
        async with guarded(self.url):
            await self._expire(
                keys=[self._key("r", correlation_id), self._key("pending")], args=[correlation_id]
            )

    async def list_pending(self) -> list[PendingRecord]:
        async with guarded(self.url):
            return await self._records(await self._r.zrange(self._key("pending"), 0, -1))

    async def list_replied(self, *, since_ts: float, limit: int = 500) -> list[PendingRecord]:
        async with guarded(self.url):
            cids = await self._r.zrangebyscore(
                self._key("replied"), repr(since_ts), "+inf", start=0, num=limit
            )
            return await self._records(cids)

    async def list_overdue(self, *, now: float, since_ts: float, limit: int = 500) -> list[PendingRecord]:
        async with guarded(self.url):
            cids = await self._r.zrangebyscore(self._key("deadline"), repr(since_ts), "+inf")
            records = await self._records(cids)
        overdue = [
            r for r in records if (r.state == "pending" and r.deadline_ts <= now) or r.state == "expired"
        ]
        return sorted(overdue, key=lambda r: r.deadline_ts)[:limit]

    def close(self) -> None:
        """Nothing to release synchronously; :meth:`aclose` closes the connection pool."""

    async def aclose(self) -> None:
        await self._r.aclose()
