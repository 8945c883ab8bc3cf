"""The budget ledger on SQLite: every reserve/commit/refund is one ``BEGIN IMMEDIATE`` transaction.

``IMMEDIATE`` takes the database's write lock before the first read, so two reservations (threads or
processes) never both read the old balance: the check and the update are serialised by SQLite itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from raygent.core.budget.base import Limit, ScopeSpend, budget_error, to_nanos, to_usd
from raygent.core.clock import Clock, SystemClock
from raygent.core.errors import ConflictError, StoreError

__all__ = ["SQLiteLedger"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_scopes (
    scope TEXT PRIMARY KEY,
    spent_tokens INTEGER NOT NULL DEFAULT 0,
    spent_nanos INTEGER NOT NULL DEFAULT 0,
    reserved_tokens INTEGER NOT NULL DEFAULT 0,
    reserved_nanos INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS budget_reservations (
    id TEXT PRIMARY KEY,
    scopes TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    nanos INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_reservations_expiry ON budget_reservations (expires_at);
"""
# Expired reservations reclaimed per reserve call: bounded so one call never does unbounded work.
_RECLAIM_BATCH = 64


class SQLiteLedger:
    """:class:`~raygent.core.budget.base.BudgetLedger` on one SQLite file (shareable across processes).

    Args:
        path: Database file; missing parent directories are created.
        reservation_ttl_s: A reservation neither committed nor refunded is released after this.
        busy_timeout_s: How long a transaction waits for the write lock.
        clock: Wall clock for reservation expiry.
        threaded: Run transactions in a worker thread (default) or inline on the event loop; inline
            suits a single-process simulation whose event loop runs on virtual time.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        reservation_ttl_s: float = 300.0,
        busy_timeout_s: float = 10.0,
        clock: Clock | None = None,
        threaded: bool = True,
    ) -> None:
        self.path = Path(path)
        self._threaded = threaded
        self._ttl_s = reservation_ttl_s
        self._busy_timeout_s = busy_timeout_s
        self._clock: Clock = clock or SystemClock()
        self._pool: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.executescript(_SCHEMA)
        finally:
            self._release(conn)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (str(self.path), self._ttl_s, self._busy_timeout_s, self._clock))

    # ----------------------------------------------------------------------------------------- public

    async def reserve(self, reservation_id: str, limits: list[Limit], *, tokens: int, usd: float) -> None:
        nanos = to_nanos(usd)
        now = self._clock.now()

        def txn(conn: sqlite3.Connection) -> None:
            self._reclaim(conn, now)
            if conn.execute("SELECT 1 FROM budget_reservations WHERE id = ?", (reservation_id,)).fetchone():
                raise ConflictError(f"budget reservation {reservation_id!r} is already open")
            for limit in limits:
                row = conn.execute(
                    "SELECT spent_tokens + reserved_tokens, spent_nanos + reserved_nanos "
                    "FROM budget_scopes WHERE scope = ?",
                    (limit.scope,),
                ).fetchone()
                used_tokens, used_nanos = row if row else (0, 0)
                if limit.max_tokens is not None and used_tokens + tokens > limit.max_tokens:
                    raise budget_error(
                        limit.scope, what="tokens", limit=limit.max_tokens, used=used_tokens, wanted=tokens
                    )
                if limit.max_usd is not None and used_nanos + nanos > to_nanos(limit.max_usd):
                    raise budget_error(
                        limit.scope, what="usd", limit=limit.max_usd, used=to_usd(used_nanos), wanted=usd
                    )
            for limit in limits:
                conn.execute(
                    "INSERT INTO budget_scopes (scope, reserved_tokens, reserved_nanos) VALUES (?, ?, ?) "
                    "ON CONFLICT (scope) DO UPDATE SET "
                    "reserved_tokens = reserved_tokens + excluded.reserved_tokens, "
                    "reserved_nanos = reserved_nanos + excluded.reserved_nanos",
                    (limit.scope, tokens, nanos),
                )
            conn.execute(
                "INSERT INTO budget_reservations (id, scopes, tokens, nanos, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (reservation_id, json.dumps([lim.scope for lim in limits]), tokens, nanos, now + self._ttl_s),
            )

        await self._run(txn)

    async def commit(self, reservation_id: str, *, tokens: int, usd: float) -> None:
        nanos = to_nanos(usd)

        def txn(conn: sqlite3.Connection) -> None:
            for scope in self._release_reservation(conn, reservation_id):
                conn.execute(
                    "UPDATE budget_scopes SET spent_tokens = spent_tokens + ?, spent_nanos = spent_nanos + ? "
                    "WHERE scope = ?",
                    (tokens, nanos, scope),
                )

        await self._run(txn)

    async def refund(self, reservation_id: str) -> None:
        await self._run(lambda conn: self._release_reservation(conn, reservation_id))

    async def spend(self, scope: str) -> ScopeSpend:
        def read(conn: sqlite3.Connection) -> ScopeSpend:
            row = conn.execute(
                "SELECT spent_tokens, spent_nanos, reserved_tokens, reserved_nanos FROM budget_scopes "
                "WHERE scope = ?",
                (scope,),
            ).fetchone()
            st, sn, rt, rn = row if row else (0, 0, 0, 0)
            return ScopeSpend(scope, st, to_usd(sn), rt, to_usd(rn))

        return await self._run(read)

    async def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()

    # ---------------------------------------------------------------------------------------- helpers

    @staticmethod
    def _release_reservation(conn: sqlite3.Connection, reservation_id: str) -> list[str]:
        row = conn.execute(
            "SELECT scopes, tokens, nanos FROM budget_reservations WHERE id = ?", (reservation_id,)
        ).fetchone()
        if row is None:
            return []
        scopes: list[str] = json.loads(row[0])
        for scope in scopes:
            conn.execute(
                "UPDATE budget_scopes SET reserved_tokens = reserved_tokens - ?, "
                "reserved_nanos = reserved_nanos - ? WHERE scope = ?",
                (row[1], row[2], scope),
            )
        conn.execute("DELETE FROM budget_reservations WHERE id = ?", (reservation_id,))
        return scopes

    def _reclaim(self, conn: sqlite3.Connection, now: float) -> None:
        expired = conn.execute(
            "SELECT id FROM budget_reservations WHERE expires_at < ? LIMIT ?", (now, _RECLAIM_BATCH)
        ).fetchall()
        for (reservation_id,) in expired:
            self._release_reservation(conn, reservation_id)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._pool:
                return self._pool.pop()
        return self._connect()

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if len(self._pool) < 8:
                self._pool.append(conn)
                return
        conn.close()

    def _transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._acquire()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as exc:
            raise StoreError(f"budget ledger at {self.path} failed: {exc}") from exc
        finally:
            self._release(conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._threaded:
            return self._transact(fn)
        return await asyncio.to_thread(self._transact, fn)


def _reopen(path: str, ttl_s: float, busy_timeout_s: float, clock: Clock) -> SQLiteLedger:
    return SQLiteLedger(path, reservation_ttl_s=ttl_s, busy_timeout_s=busy_timeout_s, clock=clock)
