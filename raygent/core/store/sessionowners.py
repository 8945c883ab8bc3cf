"""Who a session belongs to, in governed fleets.

A session id is chosen by the client, and the session's context (the conversation so far) is loaded
into every run that names it. Without an owner, a caller who guesses or learns another customer's
session id would have that customer's conversation put in front of the model on their behalf. The
first governed run of a session claims it for its end user; later runs naming it must come from the
same end user.

The claim is atomic (first writer wins, across processes and machines): SQLite beside the idempotency
ledger, or the fleet's Redis when the store is Redis.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol

from raygent.core.store.redis import redis_client
from raygent.core.store.redis_ledgers import guarded
from raygent.core.store.sqlfile import SQLiteFile

__all__ = ["RedisSessionOwners", "SQLiteSessionOwners", "SessionOwners"]


class SessionOwners(Protocol):
    async def claim(self, session_id: str, owner: str, *, now: float) -> str:
        """Record ``owner`` for a session without one; returns the session's owner either way."""
        ...

    async def close(self) -> None: ...


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS session_owners (
        session_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        claimed_at REAL NOT NULL
    )""",
)


class SQLiteSessionOwners:
    """:class:`SessionOwners` in a SQLite file (shared by every process of one machine)."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0) -> None:
        self._db = SQLiteFile(path, _SCHEMA, busy_timeout_s=busy_timeout_s)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_sqlite, (str(self._db.path), self._db.busy_timeout_s))

    async def claim(self, session_id: str, owner: str, *, now: float) -> str:
        def write(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT OR IGNORE INTO session_owners (session_id, owner, claimed_at) VALUES (?, ?, ?)",
                (session_id, owner, now),
            )
            row = conn.execute(
                "SELECT owner FROM session_owners WHERE session_id = ?", (session_id,)
            ).fetchone()
            return str(row[0])

        return await self._db.call(write, write=True)

    async def close(self) -> None:
        self._db.close()


class RedisSessionOwners:
    """:class:`SessionOwners` in the fleet's Redis (shared by every machine); ``SET NX`` then ``GET``.

    Owners are kept as long as ``ttl_s`` after the last claim (the session's own TTL, when it has one).
    """

    def __init__(
        self, url: str, *, namespace: str, ttl_s: float | None = None, op_timeout_s: float = 5.0
    ) -> None:
        self.url, self.namespace, self.ttl_s, self.op_timeout_s = url, namespace, ttl_s, op_timeout_s
        self._r = redis_client(url, op_timeout_s=op_timeout_s, decode_responses=True)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_redis, (self.url, self.namespace, self.ttl_s, self.op_timeout_s))

    async def claim(self, session_id: str, owner: str, *, now: float) -> str:
        key = f"{self.namespace}:session-owner:{session_id}"
        async with guarded(self.url):
            pipe = self._r.pipeline(transaction=True)
            pipe.set(key, owner, nx=True)
            pipe.get(key)
            if self.ttl_s is not None:
                pipe.pexpire(key, int(self.ttl_s * 1000))
            results = await pipe.execute()
        return str(results[1])

    async def close(self) -> None:
        await self._r.aclose()


def _reopen_sqlite(path: str, busy_timeout_s: float) -> SQLiteSessionOwners:
    return SQLiteSessionOwners(path, busy_timeout_s=busy_timeout_s)


def _reopen_redis(url: str, namespace: str, ttl_s: float | None, op_timeout_s: float) -> RedisSessionOwners:
    return RedisSessionOwners(url, namespace=namespace, ttl_s=ttl_s, op_timeout_s=op_timeout_s)
