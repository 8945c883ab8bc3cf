"""Governance state in PostgreSQL (``store.governance_dsn``): one approval book, one spending ledger and
one kill switch for every machine of a cluster, instead of a ``governance.db`` per machine.

Same interface and same SQL as :class:`~raygent.governance.state.GovernanceDB`: callers write
``fn(conn)`` against sqlite3 (``?`` placeholders, rows read as ``row[0]`` or ``row["status"]``); a thin
adapter turns ``?`` into ``%s`` and gives rows both kinds of access. The tables live in one schema
(``store.audit_schema``, beside the audit trail), created if missing.

Write transactions take one transaction-scoped advisory lock per schema first, so they exclude each
other across every process and machine, as SQLite's ``BEGIN IMMEDIATE`` does on one machine: a
spending reservation or an approval decision (read, check, write) cannot interleave with another.
Reads take no lock. A lock wait longer than ``busy_timeout_s`` is a retryable :class:`StoreError`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, LiteralString, SupportsIndex, TypeVar, cast, overload

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool

from raygent.core.errors import StoreError
from raygent.core.store.postgres_audit import lock_schema_migration
from raygent.governance.state import GovernanceConn

__all__ = ["PgRow", "PostgresGovernanceDB", "close_shared_governance_dbs", "shared_governance_db"]

T = TypeVar("T")

# {s} is the schema, quoted. The SQLite schema of state.py with PostgreSQL types (REAL → DOUBLE
# PRECISION, INTEGER → BIGINT); a later version adds statements, never edits these.
_SCHEMA = (
    "CREATE SCHEMA IF NOT EXISTS {s}",
    """CREATE TABLE IF NOT EXISTS {s}.approvals (
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
        amount_usd DOUBLE PRECISION,
        approvals_needed BIGINT NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        decided_at DOUBLE PRECISION,
        decisions TEXT NOT NULL,
        UNIQUE (run_id, call_id)
    )""",
    "CREATE INDEX IF NOT EXISTS approvals_by_status ON {s}.approvals (status, created_at)",
    """CREATE TABLE IF NOT EXISTS {s}.spend (
        call_key TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        tool TEXT NOT NULL,
        day TEXT NOT NULL,
        amount_usd DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS spend_by_day ON {s}.spend (agent, tool, day)",
    """CREATE TABLE IF NOT EXISTS {s}.revocations (
        identity TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {s}.parked_runs (
        run_id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {s}.checkpoints (
        seq BIGINT PRIMARY KEY,
        hash TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL
    )""",
)


class PgRow(tuple[Any, ...]):
    """A result row read by index (``row[0]``) or by column name (``row["status"]``), as ``sqlite3.Row``."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> PgRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getnewargs__(self) -> tuple[tuple[Any, ...], dict[str, int]]:
        return tuple(self), self._index

    @overload
    def __getitem__(self, key: SupportsIndex | str) -> Any: ...

    @overload
    def __getitem__(self, key: slice) -> tuple[Any, ...]: ...

    def __getitem__(self, key: SupportsIndex | str | slice) -> Any:
        if isinstance(key, str):
            try:
                key = self._index[key]
            except KeyError:
                raise IndexError(f"no column named {key!r}") from None
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._index)


def _rows(cursor: psycopg.Cursor[Any]) -> RowMaker[PgRow]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: PgRow(values, index)


@functools.lru_cache(maxsize=512)
def _to_pg(text: str) -> LiteralString:
    # Callers write sqlite3 SQL with ``?`` and no ``?`` inside literals; a literal ``%`` must survive
    # psycopg's placeholder parsing (parameters are always passed, so ``%%`` is always read as ``%``).
    return cast(LiteralString, text.replace("%", "%%").replace("?", "%s"))


class _PgConn:
    """What callers' ``fn(conn)`` sees: ``execute(sql, params)`` with sqlite3's ``?`` placeholders."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, text: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[PgRow]:
        cursor = self._conn.cursor(row_factory=_rows)
        cursor.execute(_to_pg(text), parameters)
        return cursor


def _lock_key(schema: str) -> int:
    """The advisory lock key of ``schema``'s write transactions: a signed 64-bit hash of its name."""
    digest = hashlib.sha256(f"raygent-governance-{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresGovernanceDB:
    """Governance state in one PostgreSQL schema; safe from many threads, processes and machines.

    Picklable: a copy unpickled in another process (a Ray worker) reopens by DSN, through
    :func:`shared_governance_db`.

    Args:
        dsn: libpq connection URL, e.g. ``postgresql://raygent@db:5432/raygent``.
        schema: Schema holding the tables (created if missing).
        busy_timeout_s: How long a write waits for another's lock, and a caller for a free connection,
            before a retryable :class:`StoreError`.
        pool_size: Connections kept at most.

    Raises:
        StoreError: The database cannot be reached or the tables cannot be created.
    """

    def __init__(
        self, dsn: str, *, schema: str = "raygent", busy_timeout_s: float = 10.0, pool_size: int = 4
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ValueError(f"schema {schema!r} must be a lower-case SQL identifier")
        self.dsn, self.schema = dsn, schema
        self.busy_timeout_s, self.pool_size = busy_timeout_s, pool_size
        self._where, self._secret = _describe(dsn)
        self._lock_key = _lock_key(schema)
        self._migrate()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            timeout=busy_timeout_s,
            configure=self._configure,
            open=True,
            name=f"raygent-governance-{schema}",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.dsn, self.schema, self.busy_timeout_s))

    @property
    def closed(self) -> bool:
        return self._pool.closed

    @property
    def lock_key(self) -> int:
        """The advisory lock every write transaction takes (``pg_locks`` shows who waits for it)."""
        return self._lock_key

    def _migrate(self) -> None:
        # A direct connection rather than the pool: an unreachable database says why (refused, wrong
        # password) instead of the pool's plain timeout, and a failure leaves no pool threads behind.
        def migrate(conn: psycopg.Connection[Any]) -> None:
            lock_schema_migration(conn, self.schema)
            for statement in _SCHEMA:
                conn.execute(sql.SQL(statement).format(s=sql.Identifier(self.schema)))

        try:
            with (
                psycopg.connect(self.dsn, connect_timeout=max(1, round(self.busy_timeout_s))) as conn,
                conn.transaction(),
            ):
                migrate(conn)
        except psycopg.Error as exc:
            raise self._error(exc) from self._cause(exc)

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # Each pooled connection once: callers' unqualified table names resolve in the schema, and a
        # write waiting for another's lock gives up after busy_timeout_s (retryable), as SQLite's does.
        conn.execute(
            "SELECT set_config('search_path', %s, false), set_config('lock_timeout', %s, false)",
            (f'"{self.schema}"', f"{max(1, round(self.busy_timeout_s * 1000))}ms"),
        )
        conn.commit()

    def transact(self, fn: Callable[[GovernanceConn], T], *, write: bool) -> T:
        """Run ``fn`` in one transaction on this thread (blocking); writes exclude each other."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                if write:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                return fn(_PgConn(conn))
        except psycopg.Error as exc:
            raise self._error(exc) from self._cause(exc)

    async def run(self, fn: Callable[[GovernanceConn], T], *, write: bool) -> T:
        """:meth:`transact` on a worker thread."""
        return await asyncio.to_thread(self.transact, fn, write=write)

    def close(self) -> None:
        self._pool.close()

    def _error(self, exc: psycopg.Error) -> StoreError:
        # Connection trouble, a lock or pool timeout, a serialization failure: worth retrying. A
        # programming or integrity error is not.
        return StoreError(
            f"governance state in PostgreSQL ({self._where}) failed: {self._redact(str(exc))}",
            retryable=isinstance(exc, psycopg.OperationalError),
        )

    def _cause(self, exc: psycopg.Error) -> psycopg.Error | None:
        # Chained for the traceback, unless its text carries the password (then the cause is dropped).
        return exc if self._redact(str(exc)) == str(exc) else None

    def _redact(self, text: str) -> str:
        for secret in self._secret:
            text = text.replace(secret, "***")
        return text


def _describe(dsn: str) -> tuple[str, tuple[str, ...]]:
    """``host:port/dbname schema``-style place for messages, and the strings to hide in them."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "an unreadable DSN", (dsn,)
    secrets = tuple(s for s in (dsn, str(info.get("password") or "")) if s)
    where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"
    return where, secrets


# One pool per process and database, however many components open the governance state (the
# ingress' API and metrics, the gateway and its credentials, each agent's parking lot): a cluster of
# many replicas would otherwise hold several idle connections per replica.
_SHARED: dict[tuple[int, str, str, float], PostgresGovernanceDB] = {}
_SHARED_LOCK = threading.Lock()


def shared_governance_db(
    dsn: str, *, schema: str = "raygent", busy_timeout_s: float = 10.0
) -> PostgresGovernanceDB:
    """This process' :class:`PostgresGovernanceDB` for ``dsn`` and ``schema``, opened on first use."""
    key = (os.getpid(), dsn, schema, busy_timeout_s)
    with _SHARED_LOCK:
        db = _SHARED.get(key)
        if db is None or db.closed:
            db = _SHARED[key] = PostgresGovernanceDB(dsn, schema=schema, busy_timeout_s=busy_timeout_s)
        return db


def close_shared_governance_dbs() -> None:
    """Close every database :func:`shared_governance_db` opened in this process (tests, shutdown)."""
    with _SHARED_LOCK:
        for key in [key for key in _SHARED if key[0] == os.getpid()]:
            _SHARED.pop(key).close()


def _reopen(dsn: str, schema: str, busy_timeout_s: float) -> PostgresGovernanceDB:
    return shared_governance_db(dsn, schema=schema, busy_timeout_s=busy_timeout_s)
