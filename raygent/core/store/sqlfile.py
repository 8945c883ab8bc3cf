"""A small SQLite helper for side ledgers (idempotency keys, async runs) kept beside the main store.

The ledgers live in their own file so their writes never wait behind the audit chain's write lock.
Each call runs in a worker thread on a pooled connection, inside one ``BEGIN IMMEDIATE`` transaction;
SQLite's own busy handler waits for the lock (the ledgers' writes are short and few per request).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from raygent.core.errors import StoreError

__all__ = ["SQLiteFile"]

T = TypeVar("T")

_POOL_SIZE = 4


class SQLiteFile:
    """One SQLite file in WAL mode with a schema applied on open.

    Args:
        path: Database file; missing parent directories are created.
        schema: ``CREATE … IF NOT EXISTS`` statements, run once on open.
        busy_timeout_s: How long a call waits for the write lock before failing.

    Raises:
        StoreError: The file cannot be opened.
    """

    def __init__(self, path: Path | str, schema: Sequence[str], *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._pool: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory for {self.path}: {exc}") from exc

        def apply(conn: sqlite3.Connection) -> None:
            for statement in schema:
                conn.execute(statement)

        self.transact(apply, write=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def transact(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``fn`` in one transaction on a pooled connection (blocking)."""
        with self._lock:
            if self._closed:
                raise StoreError(f"ledger at {self.path} is closed", retryable=False)
            pooled = self._pool.pop() if self._pool else None
        try:
            conn = pooled or self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite ledger at {self.path}: {exc}") from exc
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(conn)
            except BaseException:
                # A raising fn leaves nothing behind.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite ledger at {self.path} failed: {exc}", retryable=True) from exc
        finally:
            self._release(conn)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed and len(self._pool) < _POOL_SIZE and not conn.in_transaction:
                self._pool.append(conn)
                return
        conn.close()

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """:meth:`transact` off the event loop."""
        return await asyncio.to_thread(self.transact, fn, write=write)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()
