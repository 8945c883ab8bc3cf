"""The audit trail on PostgreSQL, for clusters: the same hash chain, the same append-only guarantee.

The chain logic is :mod:`raygent.core.store.chain`, unchanged. Appends lock the single ``audit_head``
row (``SELECT … FOR UPDATE``) in the same transaction as the inserts, so any number of writers on any
number of machines produce one linear chain. Triggers refuse ``UPDATE``, ``DELETE`` and ``TRUNCATE``
of records, refuse a record that does not extend the chain, and let the head only move forward. A
superuser can still switch triggers off; :meth:`PostgresAuditLog.verify_audit` then names the first
record touched, and a cut tail through the head row.

Everything lives in one schema (``raygent`` by default), so a test run or a tenant can have its own.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from raygent.core.errors import StoreError
from raygent.core.store.base import (
    GENESIS_HASH,
    AuditDraft,
    AuditQuery,
    AuditRecord,
    VerifyResult,
    canonical_json,
)
from raygent.core.store.chain import seal, verify_chain

__all__ = ["PostgresAuditLog", "lock_schema_migration"]

T = TypeVar("T")

_COLUMNS = (
    "seq, prev_hash, hash, ts, trace_id, run_id, session_id, agent, identity, kind, payload, payload_sha256"
)
_FETCH_BATCH = 1000

# {s} is the schema, quoted. Version 1; a later version adds statements, never edits these.
_SCHEMA = (
    "CREATE SCHEMA IF NOT EXISTS {s}",
    """CREATE TABLE IF NOT EXISTS {s}.audit (
        seq BIGINT PRIMARY KEY,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        trace_id TEXT,
        run_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        identity TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        payload_sha256 TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_by_run ON {s}.audit (run_id)",
    "CREATE INDEX IF NOT EXISTS audit_by_agent ON {s}.audit (agent)",
    "CREATE INDEX IF NOT EXISTS audit_by_ts ON {s}.audit (ts)",
    """CREATE TABLE IF NOT EXISTS {s}.audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    )""",
    f"INSERT INTO {{s}}.audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}') ON CONFLICT DO NOTHING",
    """CREATE OR REPLACE FUNCTION {s}.audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'audit trail is append-only'; END $$""",
    f"""CREATE OR REPLACE FUNCTION {{s}}.audit_extends_chain() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE last_seq BIGINT; last_hash TEXT;
    BEGIN
      SELECT seq, hash INTO last_seq, last_hash FROM {{s}}.audit ORDER BY seq DESC LIMIT 1;
      IF NEW.seq <> COALESCE(last_seq, 0) + 1 OR NEW.prev_hash <> COALESCE(last_hash, '{GENESIS_HASH}') THEN
        RAISE EXCEPTION 'audit record does not extend the chain';
      END IF;
      RETURN NEW;
    END $$""",
    """CREATE OR REPLACE FUNCTION {s}.audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' OR NEW.id <> OLD.id OR NEW.seq < OLD.seq
         OR (NEW.seq = OLD.seq AND NEW.hash <> OLD.hash) THEN
        RAISE EXCEPTION 'audit head may only move forward';
      END IF;
      RETURN NEW;
    END $$""",
    "DROP TRIGGER IF EXISTS audit_no_update ON {s}.audit",
    "CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON {s}.audit "
    "FOR EACH ROW EXECUTE FUNCTION {s}.audit_refuse()",
    "DROP TRIGGER IF EXISTS audit_no_truncate ON {s}.audit",
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {s}.audit "
    "FOR EACH STATEMENT EXECUTE FUNCTION {s}.audit_refuse()",
    "DROP TRIGGER IF EXISTS audit_chain ON {s}.audit",
    "CREATE TRIGGER audit_chain BEFORE INSERT ON {s}.audit "
    "FOR EACH ROW EXECUTE FUNCTION {s}.audit_extends_chain()",
    "DROP TRIGGER IF EXISTS audit_head_forward ON {s}.audit_head",
    "CREATE TRIGGER audit_head_forward BEFORE UPDATE OR DELETE ON {s}.audit_head "
    "FOR EACH ROW EXECUTE FUNCTION {s}.audit_head_forward()",
    "DROP TRIGGER IF EXISTS audit_head_no_truncate ON {s}.audit_head",
    "CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON {s}.audit_head "
    "FOR EACH STATEMENT EXECUTE FUNCTION {s}.audit_refuse()",
)


def lock_schema_migration(conn: psycopg.Connection[Any], schema: str) -> None:
    """One migrator per schema at a time, until the transaction ends: ``CREATE … IF NOT EXISTS`` races
    between processes otherwise. The audit trail and the governance state (which may share a schema,
    and both create it) take this same lock."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"raygent-audit-{schema}",))


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    # Only a hand-edited row gets here; verification then reports a payload mismatch.
    return value if isinstance(value, dict) else {"__unreadable_payload__": text}


def _record(row: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(
        seq=row[0], prev_hash=row[1], hash=row[2], ts=row[3], trace_id=row[4], run_id=row[5],
        session_id=row[6], agent=row[7], identity=row[8], kind=row[9], payload=_payload(row[10]),
        payload_sha256=row[11],
    )  # fmt: skip


class PostgresAuditLog:
    """``append_audit``, ``query_audit`` and ``verify_audit`` of the Store protocol on PostgreSQL.

    Args:
        dsn: libpq connection string, e.g. ``postgresql://raygent@db:5432/raygent``.
        schema: Schema holding the tables (created if missing).
        pool_size: Connections kept open.

    Raises:
        StoreError: The database cannot be reached or the schema cannot be created.
    """

    def __init__(self, dsn: str, *, schema: str = "raygent", pool_size: int = 4) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ValueError(f"schema {schema!r} must be a lower-case SQL identifier")
        self.dsn, self.schema, self.pool_size = dsn, schema, pool_size
        self._s = sql.Identifier(schema)
        try:
            self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, open=True, timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL for the audit trail: {exc}") from exc
        self._run(self._migrate)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.dsn, self.schema, self.pool_size))

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self._s)

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        lock_schema_migration(conn, self.schema)
        for statement in _SCHEMA:
            conn.execute(self._q(statement))

    def _run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            with self._pool.connection() as conn, conn.transaction():
                return fn(conn)
        except psycopg.errors.RaiseException as exc:
            raise StoreError(
                f"audit trail refused the write: {exc.diag.message_primary}", retryable=False
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL audit trail failed: {exc}") from exc

    async def append_audit(self, drafts: list[AuditDraft]) -> list[AuditRecord]:
        """Append to the single chain, in order, as one transaction (the head row lock orders writers)."""
        if not drafts:
            return []

        def write(conn: psycopg.Connection[Any]) -> list[AuditRecord]:
            head = conn.execute(
                self._q("SELECT seq, hash FROM {s}.audit_head WHERE id = 1 FOR UPDATE")
            ).fetchone()
            if head is None:
                raise StoreError("audit head row is missing", retryable=False)
            records = seal(drafts, head[0], head[1])
            with conn.cursor() as cur:
                cur.executemany(
                    self._q(f"INSERT INTO {{s}}.audit ({_COLUMNS}) VALUES ({', '.join(['%s'] * 12)})"),
                    [
                        (r.seq, r.prev_hash, r.hash, r.ts, r.trace_id, r.run_id, r.session_id, r.agent,
                         r.identity, r.kind, canonical_json(r.payload), r.payload_sha256)
                        for r in records
                    ],
                )  # fmt: skip
            conn.execute(
                self._q("UPDATE {s}.audit_head SET seq = %s, hash = %s WHERE id = 1"),
                (records[-1].seq, records[-1].hash),
            )
            return records

        return await asyncio.to_thread(self._run, write)

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        clauses: list[str] = ["seq > %s"]
        params: list[Any] = [query.after_seq]
        for column, value in (("run_id", query.run_id), ("agent", query.agent), ("kind", query.kind)):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if query.since_ts is not None:
            clauses.append("ts >= %s")
            params.append(query.since_ts)
        if query.tool is not None:
            clauses.append("(payload::jsonb ->> 'tool') = %s")
            params.append(query.tool)
        params.append(max(0, query.limit))
        text = f"SELECT {_COLUMNS} FROM {{s}}.audit WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT %s"

        def read(conn: psycopg.Connection[Any]) -> list[AuditRecord]:
            return [_record(row) for row in conn.execute(self._q(text), params)]

        return await asyncio.to_thread(self._run, read)

    async def verify_audit(self) -> VerifyResult:
        """Recompute the chain in one snapshot (REPEATABLE READ), streaming rows with a server cursor."""

        def read(conn: psycopg.Connection[Any]) -> VerifyResult:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = conn.execute(self._q("SELECT seq, hash FROM {s}.audit_head WHERE id = 1")).fetchone()
            with conn.cursor(name="raygent_audit_verify") as cur:
                cur.itersize = _FETCH_BATCH
                cur.execute(self._q(f"SELECT {_COLUMNS} FROM {{s}}.audit ORDER BY seq"))
                rows: Iterator[AuditRecord] = (_record(row) for row in cur)
                result = verify_chain(rows, expected_head=None if head is None else (head[0], head[1]))
            if head is None and result.ok:
                return VerifyResult(
                    ok=False, records_checked=result.records_checked, reason="audit head row is missing"
                )
            return result

        return await asyncio.to_thread(self._run, read)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.close)


def _reopen(dsn: str, schema: str, pool_size: int) -> PostgresAuditLog:
    return PostgresAuditLog(dsn, schema=schema, pool_size=pool_size)
