"""The idempotency ledger: which ``Idempotency-Key`` produced which run and response.

Semantics follow the IETF draft *The Idempotency-Key HTTP Header Field*: a key is reserved atomically
by the first request that carries it, together with a fingerprint of that request; later requests with
the same key get the stored response (same fingerprint) or are refused (other fingerprint). Keys expire
after a TTL, after which the key may be used again.

The ledger is a protocol so a Redis backend can provide it beside the Redis store; the SQLite ledger
here lives in its own file next to the fleet's main store.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from raygent.core.store.sqlfile import SQLiteFile

__all__ = ["IdempotencyEntry", "IdempotencyLedger", "SQLiteIdempotencyLedger"]

IdempotencyState = Literal["in_progress", "done"]


@dataclass(frozen=True, slots=True)
class IdempotencyEntry:
    """One key's reservation and, once done, the response to replay."""

    scope: str  # what the key is unique within, e.g. "POST /v1/agents/support/runs"
    key: str
    fingerprint: str  # sha256 of the request's canonical body
    run_id: str
    state: IdempotencyState
    created_at: float
    expires_at: float
    status: int | None = None
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class IdempotencyLedger(Protocol):
    """Atomic reservations of idempotency keys, safe across processes."""

    async def reserve(self, entry: IdempotencyEntry, *, now: float) -> tuple[bool, IdempotencyEntry]:
        """Store ``entry`` unless a live entry holds its key.

        Returns:
            ``(True, entry)`` when reserved now, else ``(False, the live entry)``; an expired entry
            is replaced as if absent.
        """
        ...

    async def complete(
        self, scope: str, key: str, run_id: str, *, status: int, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        """Record the response of the reservation that ``run_id`` holds."""
        ...

    async def release(self, scope: str, key: str, run_id: str) -> None:
        """Forget the reservation of ``run_id`` (the request was refused before anything happened)."""
        ...

    async def get(self, scope: str, key: str, *, now: float) -> IdempotencyEntry | None: ...

    async def purge_expired(self, *, now: float) -> int:
        """Delete expired keys; returns how many."""
        ...

    async def close(self) -> None: ...


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS idempotency_keys (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        run_id TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        status INTEGER,
        body TEXT,
        headers TEXT NOT NULL,
        PRIMARY KEY (scope, key)
    )""",
    "CREATE INDEX IF NOT EXISTS idempotency_by_expiry ON idempotency_keys (expires_at)",
)
_COLUMNS = "scope, key, fingerprint, run_id, state, created_at, expires_at, status, body, headers"


def _entry(row: sqlite3.Row) -> IdempotencyEntry:
    return IdempotencyEntry(
        scope=row["scope"],
        key=row["key"],
        fingerprint=row["fingerprint"],
        run_id=row["run_id"],
        state=row["state"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        status=row["status"],
        body=None if row["body"] is None else json.loads(row["body"]),
        headers=json.loads(row["headers"]),
    )


class SQLiteIdempotencyLedger:
    """:class:`IdempotencyLedger` on a SQLite file (shared by every process of a fleet).

    Args:
        path: The ledger file.
        busy_timeout_s: How long a call may wait for the write lock.
    """

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0) -> None:
        self._db = SQLiteFile(path, _SCHEMA, busy_timeout_s=busy_timeout_s)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_idem, (str(self._db.path), self._db.busy_timeout_s))

    async def reserve(self, entry: IdempotencyEntry, *, now: float) -> tuple[bool, IdempotencyEntry]:
        def write(conn: sqlite3.Connection) -> tuple[bool, IdempotencyEntry]:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM idempotency_keys WHERE scope = ? AND key = ?",
                (entry.scope, entry.key),
            ).fetchone()
            if row is not None and row["expires_at"] > now:
                return False, _entry(row)
            conn.execute(
                f"INSERT OR REPLACE INTO idempotency_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.scope,
                    entry.key,
                    entry.fingerprint,
                    entry.run_id,
                    entry.state,
                    entry.created_at,
                    entry.expires_at,
                    entry.status,
                    None if entry.body is None else json.dumps(entry.body),
                    json.dumps(entry.headers),
                ),
            )
            return True, entry

        return await self._db.call(write, write=True)

    async def complete(
        self, scope: str, key: str, run_id: str, *, status: int, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE idempotency_keys SET state = 'done', status = ?, body = ?, headers = ? "
                "WHERE scope = ? AND key = ? AND run_id = ?",
                (status, json.dumps(body), json.dumps(headers), scope, key, run_id),
            )

        await self._db.call(write, write=True)

    async def release(self, scope: str, key: str, run_id: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND run_id = ?",
                (scope, key, run_id),
            )

        await self._db.call(write, write=True)

    async def get(self, scope: str, key: str, *, now: float) -> IdempotencyEntry | None:
        def read(conn: sqlite3.Connection) -> IdempotencyEntry | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM idempotency_keys WHERE scope = ? AND key = ? AND expires_at > ?",
                (scope, key, now),
            ).fetchone()
            return None if row is None else _entry(row)

        return await self._db.call(read, write=False)

    async def purge_expired(self, *, now: float) -> int:
        def write(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,)).rowcount

        return await self._db.call(write, write=True)

    async def close(self) -> None:
        self._db.close()


def _reopen_idem(path: str, busy_timeout_s: float) -> SQLiteIdempotencyLedger:
    return SQLiteIdempotencyLedger(path, busy_timeout_s=busy_timeout_s)
