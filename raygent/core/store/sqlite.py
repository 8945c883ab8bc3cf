"""The embedded default store: one SQLite file in WAL mode, shared by every process of a fleet.

Concurrency model. Each blocking call runs in a worker thread (``asyncio.to_thread``) on a connection
borrowed from a small per-store pool, so no connection is ever used by two threads at once and the event
loop never blocks. Writes open with ``BEGIN IMMEDIATE``, which takes SQLite's single write lock up front:
the audit append reads the head and inserts after it inside that one lock, so any number of writer
processes (Ray workers) produce one linear chain. A writer that finds the lock taken retries with jittered
exponential backoff until ``busy_timeout_s`` runs out, then raises a retryable
:class:`~raygent.core.errors.StoreError`.

Tamper evidence. Triggers make ``audit`` append-only, refuse records that do not extend the chain, and
let the ``audit_head`` row only move forward. Someone with write access to the file can drop the
triggers; :meth:`SQLiteStore.verify_audit` then still finds the first record they touched (and a cut tail,
through the head row).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

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
from raygent.core.store.groupcommit import GroupCommit
from raygent.core.store.sqlite_durable import SCHEMA_V2, SQLiteDurableMixin

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "sqlite_error_may_pass"]

T = TypeVar("T")

SCHEMA_VERSION = 3
# Idle connections kept per store; more threads than this still work, the extras are just closed.
_POOL_SIZE = 8
# SQLite's own busy handler waits this long per attempt before our jittered backoff takes over; short,
# so waiting writers do not all wake in lockstep.
_NATIVE_BUSY_S = 0.05
_BACKOFF_FIRST_S = 0.002
_BACKOFF_MAX_S = 0.1
_FETCH_BATCH = 500

_AUDIT_COLUMNS = (
    "seq, prev_hash, hash, ts, trace_id, run_id, session_id, agent, identity, kind, payload, payload_sha256"
)
_RUN_COLUMNS = (
    "run_id, agent, session_id, status, input, created_at, updated_at, output, error, steps, "
    "input_tokens, output_tokens, cost_usd, caller_chain, trace_id, identity, requester, end_user"
)
# save_run leaves these alone: they say what was asked, of whom and when, and never change afterwards.
_RUN_MUTABLE = (
    "status",
    "updated_at",
    "output",
    "error",
    "steps",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "caller_chain",
    "trace_id",
    "identity",
)

# Version 1. A later version appends a tuple of statements to _MIGRATIONS; never edit a released one.
_SCHEMA_V1: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS sessions (
        session_id TEXT PRIMARY KEY,
        messages TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        session_id TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        output TEXT,
        error TEXT,
        steps TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        caller_chain TEXT NOT NULL,
        trace_id TEXT,
        identity TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at)",
    "CREATE INDEX IF NOT EXISTS runs_by_agent ON runs (agent, created_at)",
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        ts REAL NOT NULL,
        trace_id TEXT,
        run_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        identity TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        payload_sha256 TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_by_run ON audit (run_id)",
    "CREATE INDEX IF NOT EXISTS audit_by_agent ON audit (agent)",
    "CREATE INDEX IF NOT EXISTS audit_by_ts ON audit (ts)",
    """CREATE TABLE IF NOT EXISTS audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    )""",
    f"INSERT OR IGNORE INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}')",
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END""",
    # Defence in depth against a buggy or foreign writer: a row must extend the chain it lands on.
    f"""CREATE TRIGGER IF NOT EXISTS audit_extends_chain BEFORE INSERT ON audit
    WHEN NEW.seq IS NOT COALESCE((SELECT MAX(seq) FROM audit), 0) + 1
      OR NEW.prev_hash IS NOT COALESCE(
           (SELECT hash FROM audit WHERE seq = NEW.seq - 1),
           CASE WHEN NEW.seq = 1 THEN '{GENESIS_HASH}' END)
    BEGIN SELECT RAISE(ABORT, 'audit record does not extend the chain'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_head_forward BEFORE UPDATE ON audit_head
    WHEN NEW.seq < OLD.seq OR (NEW.seq = OLD.seq AND NEW.hash IS NOT OLD.hash) OR NEW.id IS NOT OLD.id
    BEGIN SELECT RAISE(ABORT, 'audit head may only move forward'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_head_no_delete BEFORE DELETE ON audit_head
    BEGIN SELECT RAISE(ABORT, 'audit head may only move forward'); END""",
)
# Version 3: who started a run and for whom (run ownership on the HTTP API). Rows stored before get ''
# (only a caller allowed to read every run sees them in a governed fleet).
_SCHEMA_V3: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN requester TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE runs ADD COLUMN end_user TEXT NOT NULL DEFAULT ''",
)
# _MIGRATIONS[i] brings a database from version i to version i + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = ((), _SCHEMA_V1, SCHEMA_V2, _SCHEMA_V3)


_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
# Errors that may pass: a lock held by another process, a full or failing disk, a file being replaced. A
# wrong statement or a broken constraint fails the same way again.
_PASSING = _BUSY | {
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
}


def _is_in(exc: sqlite3.Error, codes: frozenset[int]) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        # Extended codes (SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED_SHAREDCACHE, ...) keep the primary code in
        # the low byte.
        return code & 0xFF in codes
    return "locked" in str(exc) or "busy" in str(exc)


def _is_busy(exc: sqlite3.Error) -> bool:
    return _is_in(exc, _BUSY)


def sqlite_error_may_pass(exc: sqlite3.Error) -> bool:
    """Whether the same SQLite call may succeed later (worth retrying)."""
    return _is_in(exc, _PASSING)


def _loads_payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    # Only a hand-edited file gets here; keep the raw text so verification reports a payload mismatch
    # instead of the whole verify call failing.
    return {"__unreadable_payload__": text}


def _audit_from_row(row: sqlite3.Row) -> AuditRecord:
    return AuditRecord(
        seq=row["seq"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
        ts=row["ts"],
        trace_id=row["trace_id"],
        run_id=row["run_id"],
        session_id=row["session_id"],
        agent=row["agent"],
        identity=row["identity"],
        kind=row["kind"],
        payload=_loads_payload(row["payload"]),
        payload_sha256=row["payload_sha256"],
    )


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        agent=row["agent"],
        session_id=row["session_id"],
        status=row["status"],
        input=row["input"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        output=row["output"],
        error=None if row["error"] is None else json.loads(row["error"]),
        steps=json.loads(row["steps"]),
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cost_usd=row["cost_usd"],
        caller_chain=json.loads(row["caller_chain"]),
        trace_id=row["trace_id"],
        identity=row["identity"],
        requester=row["requester"],
        end_user=row["end_user"],
    )


def _run_params(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "agent": run.agent,
        "session_id": run.session_id,
        "status": run.status,
        "input": run.input,
        "created_at": float(run.created_at),
        "updated_at": float(run.updated_at),
        "output": run.output,
        "error": None if run.error is None else canonical_json(run.error),
        "steps": canonical_json(run.steps),
        "input_tokens": int(run.input_tokens),
        "output_tokens": int(run.output_tokens),
        "cost_usd": float(run.cost_usd),
        "caller_chain": canonical_json(run.caller_chain),
        "trace_id": run.trace_id,
        "identity": run.identity,
        "requester": run.requester,
        "end_user": run.end_user,
    }


class SQLiteStore(SQLiteDurableMixin):
    """The :class:`~raygent.core.store.base.Store` protocol on one SQLite file.

    Checkpoints and the tool-effect ledger (schema version 2) come from
    :class:`~raygent.core.store.sqlite_durable.SQLiteDurableMixin`.

    Safe to share between threads, and to open on the same file from many processes. Picklable: the copy
    opens its own connections on the same file, so a store can be handed to a Ray actor.

    Args:
        path: Database file; missing parent directories are created.
        busy_timeout_s: How long one call may wait for the write lock before raising
            :class:`~raygent.core.errors.StoreError`.
        clock: Source of ``updated_at`` for sessions; the system clock by default.

    Raises:
        StoreError: The file cannot be opened or was written by a newer raygent.
    """

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0, clock: Clock | None = None) -> None:
        if busy_timeout_s <= 0:
            raise ValueError(f"busy_timeout_s must be positive, got {busy_timeout_s}")
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._pool: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self._group = GroupCommit(self._append_now)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory for the store at {self.path}: {exc}") from exc
        self._transact(self._migrate, write=True)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Connections cannot cross processes; the copy reopens the same file with the same settings.
        return (_reopen, (str(self.path), self.busy_timeout_s, self._clock))

    # ----- connections and transactions ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the module's implicit BEGIN would be a deferred one; we issue our own.
        # check_same_thread=False is safe because the pool hands a connection to one thread at a time.
        conn = sqlite3.connect(
            self.path, timeout=_NATIVE_BUSY_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            # WAL lets readers run beside the one writer; NORMAL skips the fsync per commit, which WAL
            # makes safe against corruption (a power cut may lose the last commits, never the file).
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _acquire(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._closed:
                raise StoreError(f"store at {self.path} is closed", retryable=False)
            if self._pool:
                return self._pool.pop()
        return self._connect()

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if not self._closed and len(self._pool) < _POOL_SIZE:
                self._pool.append(conn)
                return
        conn.close()

    def _transact(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``fn`` in one transaction, retrying the whole of it while the database is busy.

        ``fn`` must be safe to re-run: it reads what it needs inside the transaction.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        backoff = _BACKOFF_FIRST_S
        while True:
            try:
                conn = self._acquire()
                try:
                    return self._once(conn, fn, write=write)
                finally:
                    self._release(conn)
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    # An I/O hiccup may pass; a constraint or schema error will fail the same way again.
                    raise StoreError(
                        f"SQLite store at {self.path} failed: {exc}", retryable=sqlite_error_may_pass(exc)
                    ) from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreError(
                        f"SQLite store at {self.path} stayed locked for {self.busy_timeout_s} s",
                        retry_after_s=1.0,
                    ) from exc
                # Full jitter: writers that collided spread out instead of colliding again.
                time.sleep(min(random.uniform(0, backoff), remaining))
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    @staticmethod
    def _once(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        # IMMEDIATE takes the write lock now, so a write never fails half-way on a lock upgrade.
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return result

    async def _call(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        return await asyncio.to_thread(self._transact, fn, write=write)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"store at {self.path} has schema version {current}, newer than this raygent's "
                f"{SCHEMA_VERSION}; upgrade raygent",
                retryable=False,
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    # ----- sessions ----------------------------------------------------------------------------------

    async def get_session(self, session_id: str) -> SessionContext | None:
        """The stored session, or ``None``."""

        def read(conn: sqlite3.Connection) -> SessionContext | None:
            row = conn.execute(
                "SELECT session_id, messages, version, updated_at FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            if row is None:
                return None
            return SessionContext(
                row["session_id"], json.loads(row["messages"]), row["version"], row["updated_at"]
            )

        return await self._call(read, write=False)

    async def put_session(self, ctx: SessionContext, *, expected_version: int) -> SessionContext:
        """Compare-and-set a session's messages.

        Args:
            ctx: The session to store; its own ``version`` and ``updated_at`` are ignored.
            expected_version: The version the caller read; 0 means the session must not exist yet.

        Returns:
            The stored session, with ``version`` ``expected_version + 1``.

        Raises:
            ConflictError: The stored version is not ``expected_version`` (another writer got there first).
        """
        messages_json = canonical_json(ctx.messages)

        def write(conn: sqlite3.Connection) -> SessionContext:
            row = conn.execute(
                "SELECT version FROM sessions WHERE session_id = ?", (ctx.session_id,)
            ).fetchone()
            current = 0 if row is None else row["version"]
            if current != expected_version:
                raise ConflictError(
                    f"session {ctx.session_id!r} is at version {current}, not {expected_version}",
                    extra={"session_id": ctx.session_id, "current_version": current},
                )
            version, now = expected_version + 1, self._clock.now()
            conn.execute(
                "INSERT INTO sessions (session_id, messages, version, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET "
                "messages = excluded.messages, version = excluded.version, updated_at = excluded.updated_at",
                (ctx.session_id, messages_json, version, now),
            )
            return SessionContext(ctx.session_id, json.loads(messages_json), version, now)

        return await self._call(write, write=True)

    # ----- runs --------------------------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> None:
        """Insert a new run.

        Raises:
            ConflictError: A run with this id exists.
        """
        params = _run_params(run)
        placeholders = ", ".join(f":{name}" for name in params)

        def write(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({placeholders}) ON CONFLICT (run_id) DO NOTHING",
                params,
            )
            if cursor.rowcount == 0:
                raise ConflictError(f"run {run.run_id!r} already exists", extra={"run_id": run.run_id})

        await self._call(write, write=True)

    async def save_run(self, run: RunRecord) -> None:
        """Replace a run's mutable fields (all but its id, agent, session, input and ``created_at``).

        Raises:
            NotFoundError: No run has this id.
        """
        params = _run_params(run)
        assignments = ", ".join(f"{name} = :{name}" for name in _RUN_MUTABLE)

        def write(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(f"UPDATE runs SET {assignments} WHERE run_id = :run_id", params)
            if cursor.rowcount == 0:
                raise NotFoundError(f"run {run.run_id!r} does not exist", extra={"run_id": run.run_id})

        await self._call(write, write=True)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or ``None``."""

        def read(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return None if row is None else _run_from_row(row)

        return await self._call(read, write=False)

    async def list_runs(
        self,
        *,
        agent: str | None = None,
        limit: int = 50,
        owner: str | None = None,
        before: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first (by ``created_at``, then insertion order), optionally of one agent and of one
        owner (the run's requester or end user); ``before`` pages on after that run."""
        clauses: list[str] = []
        params: list[Any] = []
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        if owner is not None:
            clauses.append("(requester = ? OR end_user = ?)")
            params += [owner, owner]
        if before is not None:
            clauses.append("(created_at, rowid) < (SELECT created_at, rowid FROM runs WHERE run_id = ?)")
            params.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

        def read(conn: sqlite3.Connection) -> list[RunRecord]:
            if before is not None:
                cursor = conn.execute("SELECT agent FROM runs WHERE run_id = ?", (before,)).fetchone()
                if cursor is None or (agent is not None and cursor[0] != agent):
                    raise unknown_run_cursor(before)
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
                [*params, max(0, limit)],
            ).fetchall()
            return [_run_from_row(row) for row in rows]

        return await self._call(read, write=False)

    # ----- audit -------------------------------------------------------------------------------------

    async def append_audit(self, drafts: list[AuditDraft]) -> list[AuditRecord]:
        """Append drafts to the single chain, in order, as one transaction.

        Concurrent calls of this process are group-committed (one transaction for all that arrive
        while one is in flight); each call returns once its own records are committed.

        Returns:
            The sealed records, equal to what :meth:`query_audit` reads back.

        Raises:
            ValueError: A draft's kind is unknown.
            StoreError: The write lock stayed taken for ``busy_timeout_s``.
        """
        return await self._group.append(drafts)

    async def _append_now(self, drafts: list[AuditDraft]) -> list[AuditRecord]:
        if not drafts:
            return []

        def write(conn: sqlite3.Connection) -> list[AuditRecord]:
            # Head read and inserts share the IMMEDIATE lock, so no other writer can slip in between.
            head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            if head is None:
                raise StoreError(f"audit head row is missing in {self.path}", retryable=False)
            records = seal(drafts, head["seq"], head["hash"])
            conn.executemany(
                f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                [
                    (
                        r.seq,
                        r.prev_hash,
                        r.hash,
                        r.ts,
                        r.trace_id,
                        r.run_id,
                        r.session_id,
                        r.agent,
                        r.identity,
                        r.kind,
                        canonical_json(r.payload),
                        r.payload_sha256,
                    )
                    for r in records
                ],
            )
            conn.execute(
                "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (records[-1].seq, records[-1].hash)
            )
            return records

        return await self._call(write, write=True)

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Records matching every filter set in ``query``, ascending by ``seq``.

        ``tool`` matches the payload's ``"tool"`` field; ``since_ts`` is inclusive, ``after_seq`` exclusive.
        """
        clauses: list[str] = ["seq > ?"]
        params: list[Any] = [query.after_seq]
        for column, value in (("run_id", query.run_id), ("agent", query.agent), ("kind", query.kind)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.since_ts is not None:
            clauses.append("ts >= ?")
            params.append(query.since_ts)
        if query.tool is not None:
            clauses.append("json_extract(payload, '$.tool') = ?")
            params.append(query.tool)
        params.append(max(0, query.limit))
        sql = f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?"

        def read(conn: sqlite3.Connection) -> list[AuditRecord]:
            return [_audit_from_row(row) for row in conn.execute(sql, params)]

        return await self._call(read, write=False)

    async def verify_audit(self) -> VerifyResult:
        """Recompute the whole chain against the head row, in one consistent snapshot.

        Returns:
            ``ok``, or the first bad seq and why (see :func:`~raygent.core.store.chain.verify_chain`).
        """

        def read(conn: sqlite3.Connection) -> VerifyResult:
            head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            cursor = conn.execute(f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY seq")
            result = verify_chain(
                _iter_rows(cursor), expected_head=None if head is None else (head[0], head[1])
            )
            if head is None and result.ok:
                return VerifyResult(
                    ok=False, records_checked=result.records_checked, reason="audit head row is missing"
                )
            return result

        return await self._call(read, write=False)

    async def close(self) -> None:
        """Close every pooled connection; later calls raise :class:`~raygent.core.errors.StoreError`."""
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()


def _iter_rows(cursor: sqlite3.Cursor) -> Iterator[AuditRecord]:
    # fetchmany keeps memory flat however long the trail is.
    while rows := cursor.fetchmany(_FETCH_BATCH):
        yield from (_audit_from_row(row) for row in rows)


def _reopen(path: str, busy_timeout_s: float, clock: Clock) -> SQLiteStore:
    return SQLiteStore(path, busy_timeout_s=busy_timeout_s, clock=clock)
