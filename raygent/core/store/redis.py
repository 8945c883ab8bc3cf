"""The Redis store: sessions, runs, the audit chain, checkpoints and the effect ledger on one Redis.

For clusters: every process of a fleet (on any node) shares one Redis. Keys live under one namespace per
tenant and fleet, ``{raygent:<tenant>:<fleet>}:…``; the braces are a Redis Cluster hash tag, so all of a
fleet's keys sit in one slot and every multi-key script below stays legal on a cluster.

Atomicity. Each compare-and-set (session versions, run creation, checkpoint versions, effect
attempts) is one Lua script, which Redis runs without interleaving any other client's command. The
audit chain needs SHA-256, which Lua in Redis lacks, so an append is optimistic: read the head, seal
the records in Python (:func:`~raygent.core.store.chain.seal`), then a script writes them only if the
head is still the one read; otherwise the writer re-reads and re-seals, with jittered backoff. Any
number of writers thus keep one linear chain, and :meth:`RedisStore.verify_audit` recomputes it with
the same :func:`~raygent.core.store.chain.verify_chain` the SQLite store uses.

Unlike SQLite's triggers, nothing in Redis refuses an edit of the audit keys by someone with write
access; verification still names the first record they touched, and a cut tail through the head.

Errors: a connection failure or timeout raises a retryable :class:`~raygent.core.errors.StoreError`
naming the server; nothing is silently dropped.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from raygent.core.clock import Clock, SystemClock
from raygent.core.errors import ConflictError, NotFoundError, StoreError
from raygent.core.store.base import (
    GENESIS_HASH,
    AuditDraft,
    AuditQuery,
    AuditRecord,
    RunRecord,
    SessionContext,
    VerifyResult,
    canonical_json,
    unknown_run_cursor,
)
from raygent.core.store.chain import seal, verify_chain
from raygent.core.store.durable import Checkpoint, CheckpointWrite, EffectRecord

__all__ = ["RedisStore", "redis_namespace"]

T = TypeVar("T")

_PAGE = 500
_APPEND_BACKOFF_FIRST_S = 0.001
_APPEND_BACKOFF_MAX_S = 0.05
# Written once by create_run. requester/end_user were added later: a run stored before has neither in its
# JSON and loads with the dataclass defaults ('').
_RUN_IMMUTABLE = ("run_id", "agent", "session_id", "input", "created_at", "requester", "end_user")

# Every write script takes a token (ARGV, last) that it stores beside what it wrote. redis-py re-sends a
# command after a connection error; if the first send was applied and only its reply was lost (Redis
# killed right after an fsync), the re-send finds its own token and reports success instead of a
# conflict with itself.
_PUT_SESSION = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur == tonumber(ARGV[1]) + 1 and redis.call('HGET', KEYS[1], 'w') == ARGV[5] then return {1, cur} end
if cur ~= tonumber(ARGV[1]) then return {0, cur} end
redis.call('HSET', KEYS[1], 'm', ARGV[2], 'v', cur + 1, 't', ARGV[3], 'w', ARGV[5])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) else redis.call('PERSIST', KEYS[1]) end
return {1, cur + 1}
"""
_CREATE_RUN = """
if redis.call('HSETNX', KEYS[1], 'i', ARGV[1]) == 0 then
  if redis.call('HGET', KEYS[1], 'w') == ARGV[5] then return 1 end
  return 0
end
local member = string.format('%015d', redis.call('INCR', KEYS[4])) .. ':' .. ARGV[4]
redis.call('HSET', KEYS[1], 'm', ARGV[2], 'w', ARGV[5], 'z', member)
redis.call('ZADD', KEYS[2], ARGV[3], member)
redis.call('ZADD', KEYS[3], ARGV[3], member)
return 1
"""
_SAVE_RUN = """
if redis.call('HEXISTS', KEYS[1], 'i') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'm', ARGV[1])
return 1
"""
# KEYS: head, records, then (run index, agent index) per record. ARGV: expected head seq and hash, new
# head seq and hash, then (seq, record json) per record.
_APPEND_AUDIT = """
local h = redis.call('HMGET', KEYS[1], 'seq', 'hash')
if h[1] == ARGV[3] and h[2] == ARGV[4] then return 1 end
if tonumber(h[1] or '0') ~= tonumber(ARGV[1]) or (h[2] or ARGV[5]) ~= ARGV[2] then return 0 end
local n = (#ARGV - 5) / 2
for i = 1, n do
  local seq = ARGV[5 + 2 * i - 1]
  redis.call('HSET', KEYS[2], seq, ARGV[5 + 2 * i])
  redis.call('ZADD', KEYS[2 + 2 * i - 1], seq, seq)
  redis.call('ZADD', KEYS[2 + 2 * i], seq, seq)
end
redis.call('HSET', KEYS[1], 'seq', ARGV[3], 'hash', ARGV[4])
return 1
"""
_AUDIT_SNAPSHOT = """
local h = redis.call('HMGET', KEYS[1], 'seq', 'hash')
return {h[1] or '0', h[2] or '', redis.call('HLEN', KEYS[2]), redis.call('EXISTS', KEYS[1])}
"""
# One hash per checkpoint, three fields: m packs "<version> <schema version> <deltas> <base field>
# <token> <updated_at>"; the base lives under b:<token>; d holds the deltas written since, each framed
# by its length (4 bytes, little-endian). A restore is one HGETALL of a handful of elements (each one is
# a Python-level parse in redis-py): atomic, and no large value passes through Lua either way. A full
# write is two commands sent together: a plain HSET stages the base under a field named by the
# write's token (so a stale writer never clobbers anyone's base), then this script moves the version
# with compare-and-set and points m at the staged field, or drops the staged field on a conflict.
# (Passing a 100 KB base as a script argument, which Redis copies into Lua, was most of a checkpoint's
# cost.) A delta goes through the script, which appends it to d (the chain stays smaller than a full
# write: the Checkpointer compacts it). ARGV: version, schema version, delta flag, framed delta or
# staged field, now, token.
_PUT_CHECKPOINT = """
local m = redis.call('HGET', KEYS[1], 'm')
local cur, n, bf, w = 0, 0, false, false
if m then
  local v, dn, f, tok = string.match(m, '^(%d+) %d+ (%d+) (%S+) (%S+) ')
  cur, n, bf, w = tonumber(v), tonumber(dn), f, tok
end
if cur == tonumber(ARGV[1]) and w == ARGV[6] then return 1 end
if cur ~= tonumber(ARGV[1]) - 1 or (ARGV[3] == '1' and cur == 0) then
  if ARGV[3] == '0' and bf ~= ARGV[4] then redis.call('HDEL', KEYS[1], ARGV[4]) end
  return 0
end
if ARGV[3] == '1' then
  n = n + 1
  local chain = redis.call('HGET', KEYS[1], 'd') or ''
  local meta = table.concat({ARGV[1], ARGV[2], n, bf, ARGV[6], ARGV[5]}, ' ')
  redis.call('HSET', KEYS[1], 'd', chain .. ARGV[4], 'm', meta)
else
  -- The old base, the deltas, and any base staged by a write whose script never ran (its connection
  -- was lost between the two commands) all go.
  local stale = {}
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if f ~= ARGV[4] and f ~= 'm' then stale[#stale + 1] = f end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
  redis.call('HSET', KEYS[1], 'm', table.concat({ARGV[1], ARGV[2], 0, ARGV[4], ARGV[6], ARGV[5]}, ' '))
end
return 1
"""
_BEGIN_EFFECT = """
local h = redis.call('HMGET', KEYS[1], 'attempts', 'status', 'w')
local attempts = tonumber(h[1] or '0')
if attempts == tonumber(ARGV[1]) + 1 and h[3] == ARGV[6] then return {1, redis.call('HGETALL', KEYS[1])} end
if attempts ~= tonumber(ARGV[1]) or (h[2] and h[2] ~= 'intended') then return {0, attempts, h[2] or ''} end
if attempts == 0 then
  redis.call('HSET', KEYS[1], 'run_id', ARGV[2], 'tool', ARGV[3], 'fingerprint', ARGV[4],
             'status', 'intended', 'reason', '')
end
redis.call('HSET', KEYS[1], 'attempts', attempts + 1, 'started_at', ARGV[5], 'updated_at', ARGV[5],
           'w', ARGV[6])
return {1, redis.call('HGETALL', KEYS[1])}
"""
_SETTLE_EFFECT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local h = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if h[1] ~= 'done' and (ARGV[6] == '' or tonumber(h[2] or '0') == tonumber(ARGV[6])) then
  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'reason', ARGV[4], 'updated_at', ARGV[5])
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[1], 'outcome', ARGV[2])
  else
    redis.call('HDEL', KEYS[1], 'outcome')
  end
end
return {1, redis.call('HGETALL', KEYS[1])}
"""
# Reopen a needs_approval call for a new attempt (compare-and-set on the attempt count). ARGV: expected
# attempts, now, write token; like _BEGIN_EFFECT, a re-sent script whose first send applied succeeds.
_REOPEN_EFFECT = """
local h = redis.call('HMGET', KEYS[1], 'attempts', 'status', 'w')
if not h[2] then return {-1} end
local attempts = tonumber(h[1] or '0')
if attempts == tonumber(ARGV[1]) + 1 and h[3] == ARGV[3] then return {1, redis.call('HGETALL', KEYS[1])} end
if attempts ~= tonumber(ARGV[1]) or h[2] ~= 'needs_approval' then return {0, attempts, h[2]} end
redis.call('HSET', KEYS[1], 'status', 'intended', 'attempts', attempts + 1, 'started_at', ARGV[2],
           'updated_at', ARGV[2], 'reason', '', 'w', ARGV[3])
redis.call('HDEL', KEYS[1], 'outcome')
return {1, redis.call('HGETALL', KEYS[1])}
"""


_FRAME = struct.Struct("<I")


def _unframe(chain: bytes) -> tuple[bytes, ...]:
    """The deltas of a checkpoint's d field, each framed by its length.

    Raises:
        ValueError: The chain is cut short.
    """
    deltas, pos, end = [], 0, len(chain)
    while pos < end:
        if pos + _FRAME.size > end:
            raise ValueError("delta chain cut inside a length")
        (size,) = _FRAME.unpack_from(chain, pos)
        pos += _FRAME.size
        if pos + size > end:
            raise ValueError("delta chain cut inside a delta")
        deltas.append(chain[pos : pos + size])
        pos += size
    return tuple(deltas)


def _token() -> str:
    return uuid.uuid4().hex


# Most runs read to find one owner's (Redis keeps no per-owner index).
_OWNER_SCAN = 10_000


@asynccontextmanager
async def redis_errors_as_store_errors(url: str, what: str) -> AsyncIterator[None]:
    """Turn redis-py's errors into StoreError naming ``what`` and the server (never its password);
    connection trouble, a server still loading its data set included, is retryable."""
    where = url.split("@", 1)[-1]
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise StoreError(
            f"{what} at {where} is unreachable: {exc}", retryable=True, retry_after_s=1.0
        ) from exc
    except redis_errors.RedisError as exc:
        raise StoreError(f"{what} at {where} failed: {exc}", retryable=False) from exc


def redis_client(url: str, *, op_timeout_s: float, decode_responses: bool = False) -> Any:
    """A redis-py asyncio client (its own connection pool) whose every call and connect is bounded by
    ``op_timeout_s``; typed ``Any`` because redis-py's stubs type each command ``Awaitable[T] | T``."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=op_timeout_s,
        socket_connect_timeout=op_timeout_s,
        decode_responses=decode_responses,
    )


def redis_namespace(tenant: str, fleet: str) -> str:
    """The key prefix of one tenant's fleet; the braces make it a Redis Cluster hash tag."""
    return f"{{raygent:{tenant}:{fleet}}}"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[Any]) -> dict[str, bytes]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _effect(key: str, fields: dict[str, bytes]) -> EffectRecord:
    outcome = fields.get("outcome")
    return EffectRecord(
        key=key,
        run_id=_text(fields.get("run_id")),
        tool=_text(fields.get("tool")),
        fingerprint=_text(fields.get("fingerprint")),
        status=_text(fields.get("status")),  # type: ignore[arg-type]
        attempts=int(fields.get("attempts") or 0),
        started_at=float(fields.get("started_at") or 0.0),
        updated_at=float(fields.get("updated_at") or 0.0),
        outcome=None if outcome is None else json.loads(outcome),
        reason=_text(fields.get("reason")),
    )


def _run_fields(run: RunRecord) -> tuple[str, str]:
    data = run.to_dict()
    immutable = {k: data.pop(k) for k in _RUN_IMMUTABLE}
    return json.dumps(immutable), json.dumps(data)


def _run_from(immutable: bytes, mutable: bytes) -> RunRecord:
    return RunRecord(**json.loads(immutable), **json.loads(mutable))


def _audit_from(raw: bytes) -> AuditRecord:
    return AuditRecord(**json.loads(raw))


class RedisStore:
    """The :class:`~raygent.core.store.base.Store` protocol on Redis (redis-py asyncio).

    Picklable: a copy opens its own connection pool to the same server and namespace, so a store can be
    handed to a Ray actor.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://…`` or ``unix://…``.
        namespace: Prefix of every key, e.g. :func:`redis_namespace` of a tenant and fleet.
        session_ttl_s: Stateless session context expires this long after its last write (None: never).
        op_timeout_s: Time limit of one command; also bounds how long an audit append retries.
        clock: Source of ``updated_at`` stamps.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        session_ttl_s: float | None = None,
        op_timeout_s: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        if op_timeout_s <= 0:
            raise ValueError(f"op_timeout_s must be positive, got {op_timeout_s}")
        self.url = url
        self.namespace = namespace
        self.session_ttl_s = session_ttl_s
        self.op_timeout_s = op_timeout_s
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._closed = False
        self._r = redis_client(url, op_timeout_s=op_timeout_s)
        self._scripts: dict[str, Any] = {
            name: self._r.register_script(source)
            for name, source in (
                ("put_session", _PUT_SESSION),
                ("create_run", _CREATE_RUN),
                ("save_run", _SAVE_RUN),
                ("append_audit", _APPEND_AUDIT),
                ("audit_snapshot", _AUDIT_SNAPSHOT),
                ("begin_effect", _BEGIN_EFFECT),
                ("settle_effect", _SETTLE_EFFECT),
                ("reopen_effect", _REOPEN_EFFECT),
            )
        }

    def __repr__(self) -> str:
        return f"RedisStore({self._where()!r}, namespace={self.namespace!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.url, self.namespace, self.session_ttl_s, self.op_timeout_s, self._clock))

    def _where(self) -> str:
        # Never print a password that may sit in the URL.
        return self.url.split("@", 1)[-1] if "@" in self.url else self.url

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Turn redis-py's errors into StoreError; connection trouble is retryable."""
        if self._closed:
            raise StoreError(f"Redis store at {self._where()} is closed", retryable=False)
        async with redis_errors_as_store_errors(self.url, "Redis store"):
            yield

    async def _do(self, call: Awaitable[T]) -> T:
        if self._closed and isinstance(call, Coroutine):
            call.close()  # built by the caller before we could refuse it; never awaited
        async with self._guard():
            return await call

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        async with self._guard():
            return await self._scripts[name](keys=keys, args=args)

    async def ping(self) -> None:
        """Raise StoreError unless the server answers."""
        await self._do(self._r.ping())

    # ----- sessions ----------------------------------------------------------------------------------

    async def get_session(self, session_id: str) -> SessionContext | None:
        """The stored session, or ``None`` (also once its TTL ran out)."""
        fields = await self._do(self._r.hmget(self._key("s", session_id), "m", "v", "t"))
        if fields[1] is None:
            return None
        return SessionContext(session_id, json.loads(fields[0]), int(fields[1]), float(fields[2]))

    async def put_session(self, ctx: SessionContext, *, expected_version: int) -> SessionContext:
        """Compare-and-set a session's messages (see the Store protocol); refreshes its TTL.

        Raises:
            ConflictError: The stored version is not ``expected_version``.
        """
        messages_json = canonical_json(ctx.messages)
        now = self._clock.now()
        ttl_ms = 0 if self.session_ttl_s is None else max(1, int(self.session_ttl_s * 1000))
        ok, version = await self._script(
            "put_session",
            [self._key("s", ctx.session_id)],
            [expected_version, messages_json, repr(now), ttl_ms, _token()],
        )
        if not ok:
            raise ConflictError(
                f"session {ctx.session_id!r} is at version {version}, not {expected_version}",
                extra={"session_id": ctx.session_id, "current_version": int(version)},
            )
        return SessionContext(ctx.session_id, json.loads(messages_json), int(version), now)

    # ----- runs --------------------------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> None:
        """Insert a new run and index it by time (and agent).

        Raises:
            ConflictError: A run with this id exists.
        """
        immutable, mutable = _run_fields(run)
        created = await self._script(
            "create_run",
            [
                self._key("r", run.run_id),
                self._key("runs"),
                self._key("runs", "agent", run.agent),
                self._key("runs", "n"),
            ],
            [immutable, mutable, repr(float(run.created_at)), run.run_id, _token()],
        )
        if not created:
            raise ConflictError(f"run {run.run_id!r} already exists", extra={"run_id": run.run_id})

    async def save_run(self, run: RunRecord) -> None:
        """Replace a run's mutable fields.

        Raises:
            NotFoundError: No run has this id.
        """
        _, mutable = _run_fields(run)
        if not await self._script("save_run", [self._key("r", run.run_id)], [mutable]):
            raise NotFoundError(f"run {run.run_id!r} does not exist", extra={"run_id": run.run_id})

    async def get_run(self, run_id: str) -> RunRecord | None:
        immutable, mutable = await self._do(self._r.hmget(self._key("r", run_id), "i", "m"))
        return None if immutable is None else _run_from(immutable, mutable)

    async def list_runs(
        self,
        *,
        agent: str | None = None,
        limit: int = 50,
        owner: str | None = None,
        before: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first (by ``created_at``, then insertion order), optionally of one agent and of one
        owner (requester or end user); ``before`` pages on after that run (its place in the index is
        looked up now, so runs created since do not shift the page). There is no per-owner index: an
        owner's runs are found by reading the newest runs page by page, at most ``_OWNER_SCAN`` of them."""
        if limit <= 0:
            return []
        index = self._key("runs", "agent", agent) if agent is not None else self._key("runs")
        found: list[RunRecord] = []
        page = limit if owner is None else max(limit, 200)
        start = 0 if before is None else await self._after(index, before)
        first = start
        while len(found) < limit and start - first < (limit if owner is None else _OWNER_SCAN):
            members = await self._do(self._r.zrevrange(index, start, start + page - 1))
            if not members:
                break
            async with self._guard():
                pipe = self._r.pipeline(transaction=False)
                for member in members:
                    pipe.hmget(self._key("r", _text(member).split(":", 1)[1]), "i", "m")
                rows = await pipe.execute()
            runs = [_run_from(i, m) for i, m in rows if i is not None]
            found += [r for r in runs if owner is None or owner in (r.requester, r.end_user)]
            start += page
        return found[:limit]

    async def _after(self, index: str, before: str) -> int:
        """The index position just after run ``before`` (newest first)."""
        member = await self._do(self._r.hget(self._key("r", before), "z"))
        if member is None and await self._do(self._r.hexists(self._key("r", before), "i")):
            # Stored before runs kept their index member: find it in the index (once per such page).
            async for found, _ in self._r.zscan_iter(index, match=f"*:{before}"):
                member = found
                break
        rank = None if member is None else await self._do(self._r.zrevrank(index, member))
        if rank is None:
            raise unknown_run_cursor(before)
        return int(rank) + 1

    # ----- audit -------------------------------------------------------------------------------------

    async def append_audit(self, drafts: list[AuditDraft]) -> list[AuditRecord]:
        """Append drafts to the single chain, in order, atomically (optimistic compare-and-set on the head).

        Raises:
            ValueError: A draft's kind is unknown.
            StoreError: Redis is unreachable, or the head kept moving for ``op_timeout_s``.
        """
        if not drafts:
            return []
        head_key, records_key = self._key("audit", "head"), self._key("audit", "records")
        deadline = time.monotonic() + self.op_timeout_s
        backoff = _APPEND_BACKOFF_FIRST_S
        while True:
            seq_raw, hash_raw = await self._do(self._r.hmget(head_key, "seq", "hash"))
            head_seq, head_hash = int(seq_raw or 0), _text(hash_raw) or GENESIS_HASH
            records = seal(drafts, head_seq, head_hash)
            keys = [head_key, records_key]
            args: list[Any] = [head_seq, head_hash, records[-1].seq, records[-1].hash, GENESIS_HASH]
            for record in records:
                keys += [self._key("audit", "run", record.run_id), self._key("audit", "agent", record.agent)]
                args += [record.seq, canonical_json(record.to_dict())]
            if await self._script("append_audit", keys, args):
                return records
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"audit head at {self._where()} kept moving for {self.op_timeout_s} s", retry_after_s=1.0
                )
            # Another writer won the head: full jitter so the losers do not collide again in lockstep.
            await asyncio.sleep(random.uniform(0, backoff))
            backoff = min(backoff * 2, _APPEND_BACKOFF_MAX_S)

    async def _records(self, seqs: list[int]) -> list[AuditRecord | None]:
        if not seqs:
            return []
        raw = await self._do(self._r.hmget(self._key("audit", "records"), *seqs))
        return [None if r is None else _audit_from(r) for r in raw]

    async def _candidate_pages(self, query: AuditQuery) -> AsyncIterator[list[int]]:
        """Pages of seqs (ascending, after ``after_seq``) that may match: from an index where one applies."""
        index = None
        if query.run_id is not None:
            index = self._key("audit", "run", query.run_id)
        elif query.agent is not None:
            index = self._key("audit", "agent", query.agent)
        if index is not None:
            offset = 0
            while True:
                page = await self._do(
                    self._r.zrangebyscore(index, f"({query.after_seq}", "+inf", start=offset, num=_PAGE)
                )
                if not page:
                    return
                yield [int(s) for s in page]
                offset += len(page)
        head = int(await self._do(self._r.hget(self._key("audit", "head"), "seq")) or 0)
        for start in range(query.after_seq + 1, head + 1, _PAGE):
            yield list(range(start, min(start + _PAGE, head + 1)))

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Records matching every filter set in ``query``, ascending by ``seq`` (see the SQLite store)."""
        found: list[AuditRecord] = []
        if query.limit <= 0:
            return found
        async for page in self._candidate_pages(query):
            for record in await self._records(page):
                if record is None or not _matches(record, query):
                    continue
                found.append(record)
                if len(found) >= query.limit:
                    return found
        return found

    async def verify_audit(self) -> VerifyResult:
        """Recompute the chain, page by page, up to the head read in one atomic snapshot with the count."""
        seq_raw, hash_raw, count, has_head = await self._script(
            "audit_snapshot", [self._key("audit", "head"), self._key("audit", "records")], []
        )
        head_seq, head_hash, count = int(seq_raw), _text(hash_raw) or GENESIS_HASH, int(count)
        # Walk past the head when the hash holds more records than the head says (an insertion).
        last = max(head_seq, count)
        position, checked = (0, GENESIS_HASH), 0
        for start in range(1, last + 1, _PAGE):
            page = [r for r in await self._records(list(range(start, min(start + _PAGE, last + 1)))) if r]
            result = verify_chain(page, expected_head=None, start=position)
            if not result.ok:
                return replace(result, records_checked=checked + result.records_checked)
            checked += result.records_checked
            if page:
                position = (page[-1].seq, page[-1].hash)
        result = verify_chain((), expected_head=(head_seq, head_hash), start=position)
        result = replace(result, records_checked=checked)
        if result.ok and count and not has_head:
            return VerifyResult(ok=False, records_checked=checked, reason="audit head is missing")
        return result

    # ----- checkpoints -------------------------------------------------------------------------------

    async def put_checkpoints(self, writes: list[CheckpointWrite]) -> None:
        """Apply each compare-and-set write (a full one as HSET of the base plus the script, a delta as the
        script alone), all sent in one pipelined round trip.

        Raises:
            ConflictError: Some writes did not follow the stored version (``extra["keys"]``); the
                others were applied.
        """
        if not writes:
            return
        now = repr(self._clock.now())
        commands: list[tuple[Any, ...]] = []
        for write in writes:
            commands += self._checkpoint_commands(write, now)
        replies = await self._send(commands)
        # The script's reply is the last of each write's commands.
        results: list[Any] = []
        at = 0
        for write in writes:
            at += 1 if write.delta else 2
            results.append(replies[at - 1])
        conflicts = [w.key for w, ok in zip(writes, results, strict=True) if not ok]
        if conflicts:
            raise ConflictError(
                f"checkpoint version conflict on {', '.join(sorted(set(conflicts)))}",
                extra={"keys": conflicts},
            )

    def _checkpoint_commands(self, write: CheckpointWrite, now: str) -> list[tuple[Any, ...]]:
        """The commands of one write: the script, after an HSET staging the base of a full write."""
        key, token = self._key("cp", write.key), _token()
        if write.delta:
            framed = _FRAME.pack(len(write.data)) + write.data
            args: list[Any] = [write.version, write.schema_version, "1", framed, now, token]
            return [("EVAL", _PUT_CHECKPOINT, 1, key, *args)]
        field = "b:" + token
        args = [write.version, write.schema_version, "0", field, now, token]
        return [("HSET", key, field, write.data), ("EVAL", _PUT_CHECKPOINT, 1, key, *args)]

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write on one connection and read every reply: one round trip, without
        redis-py's pipeline machinery (it checks its scripts with an extra round trip per call, and its
        bookkeeping cost about as much as the checkpoint's own commands).

        Like redis-py, a connection error re-sends all of them (its retry policy); the scripts' tokens
        make that safe. EVAL carries the script's text, so a restarted Redis (empty script cache) needs no
        reload. An error reply raises StoreError once every reply is read (the connection stays usable).
        """
        async with self._guard():
            pool = self._r.connection_pool
            conn = await pool.get_connection()
            try:
                packed = conn.pack_commands(commands)

                async def attempt() -> list[Any]:
                    await conn.send_packed_command(packed)
                    replies: list[Any] = []
                    for _ in commands:
                        try:
                            replies.append(await conn.read_response())
                        except redis_errors.ResponseError as exc:
                            replies.append(exc)
                    return replies

                async def fail(_error: Exception) -> None:
                    await conn.disconnect()

                replies = await conn.retry.call_with_retry(attempt, fail)
            finally:
                await pool.release(conn)
            for reply in replies:
                if isinstance(reply, redis_errors.ResponseError):
                    raise reply
            return replies

    async def get_checkpoint(self, key: str) -> Checkpoint | None:
        """The base and deltas of ``key`` in one atomic read (HGETALL), or ``None``."""
        # Through _send, not redis-py's command path: the pool's per-command bookkeeping was ~10 % of a
        # restore (P3).
        (reply,) = await self._send([("HGETALL", self._key("cp", key))])
        # A map under RESP3, a flat list of pairs under RESP2.
        fields = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))
        meta = fields.get(b"m")
        if meta is None:
            return None  # nothing, or only a base staged by a write that never completed
        try:
            version, schema_version, count, base_field, _, updated_at = meta.split(b" ")
            deltas = _unframe(fields.get(b"d") or b"")
            if len(deltas) != int(count):
                raise ValueError(f"{len(deltas)} deltas stored, {int(count)} recorded")
            return Checkpoint(
                key=key,
                version=int(version),
                schema_version=int(schema_version),
                base=fields[base_field],
                deltas=deltas,
                updated_at=float(updated_at),
            )
        except (ValueError, KeyError) as exc:
            raise StoreError(f"checkpoint {key!r} in Redis is corrupt: {exc!r}", retryable=False) from None

    async def delete_checkpoint(self, key: str) -> None:
        await self._do(self._r.delete(self._key("cp", key)))

    # ----- the effect ledger -------------------------------------------------------------------------

    async def get_effect(self, key: str) -> EffectRecord | None:
        fields = await self._do(self._r.hgetall(self._key("effect", key)))
        return None if not fields else _effect(key, {_text(k): v for k, v in fields.items()})

    async def begin_effect(
        self, key: str, *, run_id: str, tool: str, fingerprint: str, now: float, expected_attempts: int
    ) -> EffectRecord:
        """Record a new attempt as ``intended`` (compare-and-set on the attempt count).

        Raises:
            ConflictError: The stored attempt count is not ``expected_attempts`` or the call is settled.
        """
        reply = await self._script(
            "begin_effect",
            [self._key("effect", key)],
            [expected_attempts, run_id, tool, fingerprint, repr(now), _token()],
        )
        if not reply[0]:
            status = _text(reply[2])
            raise ConflictError(
                f"effect {key!r} has {int(reply[1])} attempts" + (f" and is {status}" if status else ""),
                extra={"key": key, "attempts": int(reply[1])},
            )
        return _effect(key, _pairs(reply[1]))

    async def settle_effect(
        self,
        key: str,
        *,
        status: Literal["done", "needs_approval"],
        outcome: dict[str, Any] | None,
        reason: str,
        now: float,
        expected_attempts: int | None = None,
    ) -> EffectRecord:
        """Record the outcome; a ``done`` record is final and is returned unchanged, and so is one whose
        attempt count is not ``expected_attempts`` (when given).

        Raises:
            NotFoundError: No attempt of ``key`` was begun.
        """
        reply = await self._script(
            "settle_effect",
            [self._key("effect", key)],
            [
                status,
                "" if outcome is None else canonical_json(outcome),
                "0" if outcome is None else "1",
                reason,
                repr(now),
                "" if expected_attempts is None else str(expected_attempts),
            ],
        )
        if not reply[0]:
            raise NotFoundError(f"effect {key!r} was never begun", extra={"key": key})
        return _effect(key, _pairs(reply[1]))

    async def reopen_effect(self, key: str, *, now: float, expected_attempts: int) -> EffectRecord:
        """Start a new attempt of a ``needs_approval`` call (compare-and-set on the attempt count).

        Raises:
            NotFoundError: No attempt of ``key`` was begun.
            ConflictError: The call is not ``needs_approval`` or its attempt count is not
                ``expected_attempts``.
        """
        reply = await self._script(
            "reopen_effect", [self._key("effect", key)], [expected_attempts, repr(now), _token()]
        )
        if reply[0] == -1:
            raise NotFoundError(f"effect {key!r} was never begun", extra={"key": key})
        if not reply[0]:
            raise ConflictError(
                f"effect {key!r} has {int(reply[1])} attempts and is {_text(reply[2])}",
                extra={"key": key, "attempts": int(reply[1])},
            )
        return _effect(key, _pairs(reply[1]))

    async def close(self) -> None:
        """Close the connection pool; later calls raise StoreError."""
        if not self._closed:
            self._closed = True
            await self._r.aclose()


def _matches(record: AuditRecord, query: AuditQuery) -> bool:
    return (
        record.seq > query.after_seq
        and (query.run_id is None or record.run_id == query.run_id)
        and (query.agent is None or record.agent == query.agent)
        and (query.kind is None or record.kind == query.kind)
        and (query.tool is None or record.payload.get("tool") == query.tool)
        and (query.since_ts is None or record.ts >= query.since_ts)
    )


def _reopen(
    url: str, namespace: str, session_ttl_s: float | None, op_timeout_s: float, clock: Clock
) -> RedisStore:
    return RedisStore(
        url, namespace=namespace, session_ttl_s=session_ttl_s, op_timeout_s=op_timeout_s, clock=clock
    )
