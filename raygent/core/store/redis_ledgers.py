"""The idempotency and async-run ledgers on Redis, for fleets whose store is Redis.

With several ingress replicas on several machines, per-machine SQLite ledgers would let two replicas
each accept the same ``Idempotency-Key`` and would leave a dead machine's accepted async runs where no
other replica can take them over. These ledgers keep both in the fleet's Redis, with the same
semantics as the SQLite ones (the same test suite runs against both).

Every check-and-write is one Lua script, so it is atomic against every other replica. Scripts never
parse JSON documents (Redis' cjson turns an empty list into ``{}``): the fields a script compares are
kept as hash fields beside the document, and the document is replaced whole from Python.
"""

from __future__ import annotations

import json
from typing import Any

from raygent.core.errors import ConflictError
from raygent.core.store.asyncruns import AsyncRunEntry
from raygent.core.store.idempotency import IdempotencyEntry
from raygent.core.store.redis import redis_client, redis_errors_as_store_errors

__all__ = ["RedisAsyncRunLedger", "RedisIdempotencyLedger", "guarded"]

# ----------------------------------------------------------------------------------------- idempotency

# KEYS[1] entry hash. ARGV: now, ttl_ms, then field/value pairs of the new entry.
_RESERVE = """
local expires = redis.call('HGET', KEYS[1], 'expires_at')
if expires and tonumber(expires) > tonumber(ARGV[1]) then
  return redis.call('HGETALL', KEYS[1])
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {}
"""

# KEYS[1] entry hash. ARGV: run_id, status, body, headers.
_COMPLETE = """
if redis.call('HGET', KEYS[1], 'run_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3], 'headers', ARGV[4])
return 1
"""

# KEYS[1] entry hash. ARGV: run_id.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'run_id') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode()


def _pairs(flat: list[bytes]) -> dict[str, bytes]:
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def _idem_fields(entry: IdempotencyEntry) -> dict[str, str]:
    return {
        "scope": entry.scope,
        "key": entry.key,
        "fingerprint": entry.fingerprint,
        "run_id": entry.run_id,
        "state": entry.state,
        "created_at": repr(entry.created_at),
        "expires_at": repr(entry.expires_at),
        "status": "" if entry.status is None else str(entry.status),
        "body": "" if entry.body is None else json.dumps(entry.body),
        "headers": json.dumps(entry.headers),
    }


def _idem_entry(fields: dict[str, bytes]) -> IdempotencyEntry:
    status, body = _text(fields.get("status")), _text(fields.get("body"))
    return IdempotencyEntry(
        scope=_text(fields.get("scope")),
        key=_text(fields.get("key")),
        fingerprint=_text(fields.get("fingerprint")),
        run_id=_text(fields.get("run_id")),
        state="done" if _text(fields.get("state")) == "done" else "in_progress",
        created_at=float(_text(fields.get("created_at")) or 0),
        expires_at=float(_text(fields.get("expires_at")) or 0),
        status=int(status) if status else None,
        body=json.loads(body) if body else None,
        headers=json.loads(_text(fields.get("headers")) or "{}"),
    )


def guarded(url: str) -> Any:
    """Redis errors of the side ledgers as StoreError (see :func:`redis_errors_as_store_errors`)."""
    return redis_errors_as_store_errors(url, "Redis ledger")


class _RedisLedger:
    """Connection, key naming and error mapping shared by both ledgers (picklable: reopens)."""

    _part = ""

    def __init__(self, url: str, *, namespace: str, op_timeout_s: float = 5.0) -> None:
        self.url = url
        self.namespace = namespace
        self.op_timeout_s = op_timeout_s
        self._r = redis_client(url, op_timeout_s=op_timeout_s)

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy (e.g. handed to another Ray worker) opens its own connection pool.
        return (_reopen, (type(self), self.url, self.namespace, self.op_timeout_s))

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, self._part, *parts))

    def _guard(self) -> Any:
        return guarded(self.url)

    async def close(self) -> None:
        await self._r.aclose()


class RedisIdempotencyLedger(_RedisLedger):
    """:class:`~raygent.core.store.idempotency.IdempotencyLedger` on Redis.

    Expiry is decided by the ``now`` the caller passes (like the SQLite ledger); Redis also expires
    each key at its TTL, so nothing needs purging.
    """

    _part = "idem"

    def __init__(self, url: str, *, namespace: str, op_timeout_s: float = 5.0) -> None:
        super().__init__(url, namespace=namespace, op_timeout_s=op_timeout_s)
        self._reserve = self._r.register_script(_RESERVE)
        self._complete = self._r.register_script(_COMPLETE)
        self._release = self._r.register_script(_RELEASE)

    def _entry_key(self, scope: str, key: str) -> str:
        # Scope and key are caller text: JSON keeps any ':' in them from making two pairs collide.
        return self._key(json.dumps([scope, key]))

    async def reserve(self, entry: IdempotencyEntry, *, now: float) -> tuple[bool, IdempotencyEntry]:
        ttl_ms = max(1, int((entry.expires_at - now) * 1000))
        args: list[Any] = [repr(now), ttl_ms]
        for name, value in _idem_fields(entry).items():
            args += [name, value]
        async with self._guard():
            live = await self._reserve(keys=[self._entry_key(entry.scope, entry.key)], args=args)
        if not live:
            return True, entry
        return False, _idem_entry(_pairs(live))

    async def complete(
        self, scope: str, key: str, run_id: str, *, status: int, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        async with self._guard():
            await self._complete(
                keys=[self._entry_key(scope, key)],
                args=[run_id, str(status), json.dumps(body), json.dumps(headers)],
            )

    async def release(self, scope: str, key: str, run_id: str) -> None:
        async with self._guard():
            await self._release(keys=[self._entry_key(scope, key)], args=[run_id])

    async def get(self, scope: str, key: str, *, now: float) -> IdempotencyEntry | None:
        async with self._guard():
            fields = await self._r.hgetall(self._entry_key(scope, key))
        if not fields:
            return None
        entry = _idem_entry({k.decode(): v for k, v in fields.items()})
        return entry if entry.expires_at > now else None

    async def purge_expired(self, *, now: float) -> int:
        return 0  # Redis expires every key at its TTL


# ------------------------------------------------------------------------------------------ async runs

# Hash fields beside the document: owner ('' = none), lease_until, cancel (0/1), open (0/1),
# finished (0/1), accepted_at. The document holds every other field of the entry.

# KEYS[1] entry, KEYS[2] open-leases zset. ARGV: run_id, lease_until, open, then field/value pairs.
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if ARGV[3] == '1' then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) end
return 1
"""

# KEYS[1] entry, KEYS[2] zset. ARGV: run_id, owner, now, lease_until.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'open') ~= '1' then return {} end
local owner = redis.call('HGET', KEYS[1], 'owner')
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until'))
if owner ~= '' and owner ~= ARGV[2] and lease > tonumber(ARGV[3]) then return {} end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'lease_until', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] entry, KEYS[2] zset. ARGV: run_id, owner, cancel, lease_until, open, then field/value pairs.
# Returns -1 (not the owner), else the cancel flag as stored (a request since the read is kept).
_SAVE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return -1 end
local cancel = ARGV[3]
if redis.call('HGET', KEYS[1], 'cancel') == '1' then cancel = '1' end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('HSET', KEYS[1], 'cancel', cancel)
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return tonumber(cancel)
"""

# KEYS[1] zset, KEYS[2..] entries. ARGV: owner, lease_until, run ids (in KEYS order).
_RENEW = """
local cancelled = {}
for i = 2, #KEYS do
  local id = ARGV[i + 1]
  if redis.call('HGET', KEYS[i], 'owner') == ARGV[1] then
    redis.call('HSET', KEYS[i], 'lease_until', ARGV[2])
    if redis.call('HGET', KEYS[i], 'open') == '1' then redis.call('ZADD', KEYS[1], ARGV[2], id) end
    local finished = redis.call('HGET', KEYS[i], 'finished') == '1'
    if redis.call('HGET', KEYS[i], 'cancel') == '1' and not finished then cancelled[#cancelled + 1] = id end
  end
end
return cancelled
"""

# KEYS[1] entry.
_REQUEST_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if redis.call('HGET', KEYS[1], 'finished') ~= '1' then redis.call('HSET', KEYS[1], 'cancel', '1') end
return redis.call('HGETALL', KEYS[1])
"""

_SIDE_FIELDS = ("owner", "lease_until", "cancel_requested")


def _run_fields(entry: AsyncRunEntry) -> dict[str, str]:
    doc = entry.to_dict()
    for name in _SIDE_FIELDS:
        doc.pop(name)
    return {
        "doc": json.dumps(doc),
        "owner": entry.owner or "",
        "lease_until": repr(entry.lease_until),
        "open": "1" if entry.open else "0",
        "finished": "1" if entry.state == "finished" else "0",
        "accepted_at": repr(entry.accepted_at),
    }


def _run_entry(fields: dict[str, bytes]) -> AsyncRunEntry:
    doc = json.loads(_text(fields.get("doc")))
    doc["owner"] = _text(fields.get("owner")) or None
    doc["lease_until"] = float(_text(fields.get("lease_until")) or 0)
    doc["cancel_requested"] = _text(fields.get("cancel")) == "1"
    return AsyncRunEntry.from_dict(doc)


def _flat(fields: dict[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]


class RedisAsyncRunLedger(_RedisLedger):
    """:class:`~raygent.core.store.asyncruns.AsyncRunLedger` on Redis: one hash per run, and a sorted
    set of the open entries by lease expiry (what :meth:`expired` scans)."""

    _part = "async"

    def __init__(self, url: str, *, namespace: str, op_timeout_s: float = 5.0) -> None:
        super().__init__(url, namespace=namespace, op_timeout_s=op_timeout_s)
        self._add = self._r.register_script(_ADD)
        self._claim = self._r.register_script(_CLAIM)
        self._save = self._r.register_script(_SAVE)
        self._renew = self._r.register_script(_RENEW)
        self._cancel = self._r.register_script(_REQUEST_CANCEL)

    def _entry_key(self, run_id: str) -> str:
        return self._key("run", run_id)

    @property
    def _leases(self) -> str:
        return self._key("open")

    async def add(self, entry: AsyncRunEntry) -> None:
        fields = _run_fields(entry)
        fields["cancel"] = "1" if entry.cancel_requested else "0"
        args = [entry.run_id, repr(entry.lease_until), fields["open"], *_flat(fields)]
        async with self._guard():
            added = await self._add(keys=[self._entry_key(entry.run_id), self._leases], args=args)
        if not added:
            raise ConflictError(f"async run {entry.run_id!r} already exists")

    async def get(self, run_id: str) -> AsyncRunEntry | None:
        async with self._guard():
            fields = await self._r.hgetall(self._entry_key(run_id))
        return _run_entry({k.decode(): v for k, v in fields.items()}) if fields else None

    async def claim(self, run_id: str, owner: str, *, now: float, lease_s: float) -> AsyncRunEntry | None:
        async with self._guard():
            flat = await self._claim(
                keys=[self._entry_key(run_id), self._leases],
                args=[run_id, owner, repr(now), repr(now + lease_s)],
            )
        return _run_entry(_pairs(flat)) if flat else None

    async def save(self, entry: AsyncRunEntry, *, owner: str) -> bool:
        fields = _run_fields(entry)
        args = [
            entry.run_id,
            owner,
            "1" if entry.cancel_requested else "0",
            fields["lease_until"],
            fields["open"],
            *_flat(fields),
        ]
        async with self._guard():
            cancel = await self._save(keys=[self._entry_key(entry.run_id), self._leases], args=args)
        if cancel < 0:
            return False
        entry.cancel_requested = bool(cancel)  # never drop a cancel request that landed meanwhile
        return True

    async def renew(self, owner: str, run_ids: list[str], *, lease_until: float) -> list[str]:
        if not run_ids:
            return []
        keys = [self._leases, *(self._entry_key(r) for r in run_ids)]
        async with self._guard():
            cancelled = await self._renew(keys=keys, args=[owner, repr(lease_until), *run_ids])
        return [_text(c) for c in cancelled]

    async def expired(self, *, now: float, limit: int) -> list[AsyncRunEntry]:
        if limit <= 0:
            return []
        async with self._guard():
            ids = await self._r.zrangebyscore(self._leases, "-inf", repr(now))
            pipe = self._r.pipeline(transaction=False)
            for run_id in ids:
                pipe.hgetall(self._entry_key(_text(run_id)))
            rows = await pipe.execute() if ids else []
        entries = [_run_entry({k.decode(): v for k, v in row.items()}) for row in rows if row]
        due = [e for e in entries if e.open and e.lease_until <= now]
        return sorted(due, key=lambda e: e.accepted_at)[:limit]

    async def request_cancel(self, run_id: str) -> AsyncRunEntry | None:
        async with self._guard():
            flat = await self._cancel(keys=[self._entry_key(run_id)])
        return _run_entry(_pairs(flat)) if flat else None


def _reopen(cls: type[_RedisLedger], url: str, namespace: str, op_timeout_s: float) -> _RedisLedger:
    return cls(url, namespace=namespace, op_timeout_s=op_timeout_s)
