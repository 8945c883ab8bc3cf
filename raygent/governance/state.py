"""Durable governance state: approvals, spending reservations, revoked identities, parked runs and
signed audit checkpoints.

By default one SQLite file in the state directory (:class:`GovernanceDB`), shared by every process of
the fleet on that machine (ingress, gateway replicas, agents). With ``store.governance_dsn`` it lives in
PostgreSQL (:class:`~raygent.governance.pgstate.PostgresGovernanceDB`), shared by every machine of a
cluster: one approval book, one spending ledger, one kill switch. :func:`open_governance_db` picks.

Both run ``fn(conn)`` in one transaction. Write transactions exclude each other (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: an advisory lock), so a check-then-write (a spending reservation, an approval
decision) is atomic across processes and machines; blocking calls run on worker threads so no event
loop stalls. The SQL that callers write runs on both: ``?`` placeholders, rows read by index or by
column name, ``INSERT … ON CONFLICT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from raygent.core.errors import StoreError
from raygent.core.store.sqlite import sqlite_error_may_pass

if TYPE_CHECKING:
    from raygent.core.config import Fleet

__all__ = ["GovernanceConn", "GovernanceCursor", "GovernanceDB", "GovernanceState", "open_governance_db"]

T = TypeVar("T")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS approvals (
        approval_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        call_id TEXT NOT NULL,
        root_run_id TEXT NOT NULL,
        root_agent TEXT NOT NULL,
        agent TEXT NOT NULL,
        identity TEXT NOT NULL,
        tool TEXT NOT NULL,
        arguments TEXT NOT NULL,
        args_sha256 TEXT NOT NULL,
        context TEXT NOT NULL,
        requester TEXT NOT NULL,
        end_user TEXT NOT NULL,
        amount_usd REAL,
        approvals_needed INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        decided_at REAL,
        decisions TEXT NOT NULL,
        UNIQUE (run_id, call_id)
    )""",
    "CREATE INDEX IF NOT EXISTS approvals_by_status ON approvals (status, created_at)",
    """CREATE TABLE IF NOT EXISTS spend (
        call_key TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        tool TEXT NOT NULL,
        day TEXT NOT NULL,
        amount_usd REAL NOT NULL,
        state TEXT NOT NULL,
        ts REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS spend_by_day ON spend (agent, tool, day)",
    """CREATE TABLE IF NOT EXISTS revocations (
        identity TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        ts REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS parked_runs (
        run_id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        ts REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        seq INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        ts REAL NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL
    )""",
)


class GovernanceCursor(Protocol):
    """What a statement returns: rows support ``row[0]`` and ``row["column"]``."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class GovernanceConn(Protocol):
    """The connection ``fn`` gets: ``sqlite3.Connection``, or its PostgreSQL adapter."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> GovernanceCursor: ...


class GovernanceState(Protocol):
    """Either backend: :class:`GovernanceDB` or :class:`~raygent.governance.pgstate.PostgresGovernanceDB`."""

    def transact(self, fn: Callable[[GovernanceConn], T], *, write: bool) -> T: ...

    async def run(self, fn: Callable[[GovernanceConn], T], *, write: bool) -> T: ...


def open_governance_db(fleet: Fleet) -> GovernanceState:
    """The governance state a fleet file configures: PostgreSQL with ``store.governance_dsn`` (one per
    process and database, shared), else ``governance.db`` in the state directory.

    Raises:
        StoreError: The state cannot be opened.
    """
    spec = fleet.store
    if spec.governance_dsn is not None:
        from raygent.governance.pgstate import shared_governance_db  # psycopg only where it is used

        return shared_governance_db(
            spec.governance_dsn, schema=spec.audit_schema, busy_timeout_s=spec.busy_timeout_s
        )
    return GovernanceDB(fleet.state_path("governance.db"), busy_timeout_s=spec.busy_timeout_s)


class GovernanceDB:
    """One SQLite file; safe from many threads and processes. Picklable (reopens by path).

    Args:
        path: The database file; parent directories are created.
        busy_timeout_s: How long a write waits for the lock before :class:`StoreError`.
    """

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory for {self.path}: {exc}") from exc

        def migrate(conn: GovernanceConn) -> None:
            for statement in _SCHEMA:
                conn.execute(statement)

        self.transact(migrate, write=True)

    def __reduce__(self) -> tuple[Any, ...]:
        return (GovernanceDB, (str(self.path),), {"busy_timeout_s": self.busy_timeout_s})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.busy_timeout_s = state["busy_timeout_s"]

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not be shared between threads at once,
        # and the default executor's threads are few and long-lived.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def transact(self, fn: Callable[[GovernanceConn], T], *, write: bool) -> T:
        """Run ``fn`` in one transaction on this thread (blocking)."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(
                f"governance state at {self.path} failed: {exc}", retryable=sqlite_error_may_pass(exc)
            ) from exc
        return result

    async def run(self, fn: Callable[[GovernanceConn], T], *, write: bool) -> T:
        """:meth:`transact` on a worker thread."""
        return await asyncio.to_thread(self.transact, fn, write=write)
