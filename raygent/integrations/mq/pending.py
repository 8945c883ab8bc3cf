"""Durable pending-reply records: how an asynchronous MQ call survives the caller's restart.

An asynchronous tool call (``async_after_ms``) is recorded before its request is sent, keyed by its
correlation id. The reply is written here before the broker is told it was received, so a reply is never
lost between the queue and the call; the first reply wins and later ones (a responder that answered
twice, a resent request) are counted and ignored. Calling the same tool call again (same correlation id)
returns the recorded reply without sending the request again.

SQLite in the fleet's state directory (WAL, safe across processes on one node) is the default; fleets whose
store is Redis keep them there (``pending_redis.py``), so gateway replicas on several machines share them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from raygent.core.errors import StoreError
from raygent.integrations.mq.envelope import Envelope

__all__ = ["PendingRecord", "PendingReplies", "PendingState", "SQLitePendingReplies"]

PendingState = Literal["pending", "replied", "expired"]


@dataclass(frozen=True, slots=True)
class PendingRecord:
    correlation_id: str
    tool: str
    call_id: str
    run_id: str
    state: PendingState
    created_ts: float
    deadline_ts: float
    replied_ts: float | None = None
    reply: Envelope | None = None
    duplicate_replies: int = 0


class PendingReplies(Protocol):
    async def register(self, record: PendingRecord) -> tuple[PendingRecord, bool]:
        """Insert ``record`` unless its correlation id exists; returns (stored record, inserted)."""
        ...

    async def record_reply(self, reply: Envelope, *, now: float) -> PendingRecord | None:
        """Store the first reply of a pending call; returns the record when this reply was the first,
        None for a duplicate or a reply to a call this store does not know."""
        ...

    async def get(self, correlation_id: str) -> PendingRecord | None: ...

    async def expire(self, correlation_id: str) -> None: ...

    async def list_pending(self) -> list[PendingRecord]: ...

    async def list_replied(self, *, since_ts: float, limit: int = 500) -> list[PendingRecord]:
        """Calls whose reply was recorded at or after ``since_ts``, oldest first (the restart sweep
        resumes the runs among them that still wait)."""
        ...

    async def list_overdue(self, *, now: float, since_ts: float, limit: int = 500) -> list[PendingRecord]:
        """Calls whose reply can no longer come: still pending past their deadline, or expired, with a
        deadline at or after ``since_ts``; oldest deadline first."""
        ...

    async def aclose(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS mq_pending (
    correlation_id TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    call_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ts REAL NOT NULL,
    deadline_ts REAL NOT NULL,
    replied_ts REAL,
    reply_body BLOB,
    reply_headers TEXT,
    reply_message_id TEXT,
    duplicate_replies INTEGER NOT NULL DEFAULT 0,
    unknown INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS mq_pending_state ON mq_pending(state);
"""
_COLUMNS = (
    "correlation_id, tool, call_id, run_id, state, created_ts, deadline_ts, replied_ts, reply_body,"
    " reply_headers, reply_message_id, duplicate_replies"
)


def _row_to_record(row: tuple[object, ...]) -> PendingRecord:
    (cid, tool, call_id, run_id, state, created, deadline, replied, body, headers, mid, dups) = row
    reply = None
    if body is not None:
        reply = Envelope(
            body=bytes(body),  # type: ignore[call-overload]
            correlation_id=str(cid),
            message_id=str(mid or ""),
            headers=json.loads(str(headers or "{}")),
        )
    return PendingRecord(
        correlation_id=str(cid),
        tool=str(tool),
        call_id=str(call_id),
        run_id=str(run_id),
        state=state,  # type: ignore[arg-type]
        created_ts=float(created),  # type: ignore[arg-type]
        deadline_ts=float(deadline),  # type: ignore[arg-type]
        replied_ts=None if replied is None else float(replied),  # type: ignore[arg-type]
        reply=reply,
        duplicate_replies=int(dups),  # type: ignore[call-overload]
    )


class SQLitePendingReplies:
    """Pending records in a SQLite file; one instance per process (a connection is not shared across
    processes, the file is).

    Args:
        path: The database file (created with its directory).
        busy_timeout_s: How long a writer waits for another process's lock.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    async def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        def work() -> list[tuple[object, ...]]:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()

        try:
            return await asyncio.to_thread(work)
        except sqlite3.Error as exc:
            raise StoreError(f"pending-reply store failed: {exc}") from None

    async def register(self, record: PendingRecord) -> tuple[PendingRecord, bool]:
        inserted = await self._run(
            "INSERT INTO mq_pending (correlation_id, tool, call_id, run_id, state, created_ts, deadline_ts)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT(correlation_id) DO NOTHING RETURNING correlation_id",
            (
                record.correlation_id,
                record.tool,
                record.call_id,
                record.run_id,
                "pending",
                record.created_ts,
                record.deadline_ts,
            ),
        )
        stored = await self.get(record.correlation_id)
        if stored is None:  # pragma: no cover - the row was just written or found
            raise StoreError(f"pending record {record.correlation_id} vanished")
        return stored, bool(inserted)

    async def record_reply(self, reply: Envelope, *, now: float) -> PendingRecord | None:
        # One statement decides first-or-duplicate atomically, whichever process gets there first.
        first = await self._run(
            "UPDATE mq_pending SET state='replied', replied_ts=?, reply_body=?, reply_headers=?,"
            " reply_message_id=? WHERE correlation_id=? AND state='pending' RETURNING correlation_id",
            (now, reply.body, json.dumps(dict(reply.headers)), reply.message_id, reply.correlation_id),
        )
        if first:
            return await self.get(reply.correlation_id)
        await self._run(
            "UPDATE mq_pending SET duplicate_replies = duplicate_replies + 1 WHERE correlation_id=?",
            (reply.correlation_id,),
        )
        return None

    async def get(self, correlation_id: str) -> PendingRecord | None:
        rows = await self._run(f"SELECT {_COLUMNS} FROM mq_pending WHERE correlation_id=?", (correlation_id,))
        return _row_to_record(rows[0]) if rows else None

    async def expire(self, correlation_id: str) -> None:
        await self._run(
            "UPDATE mq_pending SET state='expired' WHERE correlation_id=? AND state='pending'",
            (correlation_id,),
        )

    async def list_pending(self) -> list[PendingRecord]:
        rows = await self._run(f"SELECT {_COLUMNS} FROM mq_pending WHERE state='pending' ORDER BY created_ts")
        return [_row_to_record(r) for r in rows]

    async def list_replied(self, *, since_ts: float, limit: int = 500) -> list[PendingRecord]:
        rows = await self._run(
            f"SELECT {_COLUMNS} FROM mq_pending WHERE state='replied' AND replied_ts >= ?"
            " ORDER BY replied_ts LIMIT ?",
            (since_ts, limit),
        )
        return [_row_to_record(r) for r in rows]

    async def list_overdue(self, *, now: float, since_ts: float, limit: int = 500) -> list[PendingRecord]:
        rows = await self._run(
            f"SELECT {_COLUMNS} FROM mq_pending WHERE deadline_ts >= ? AND"
            " ((state='pending' AND deadline_ts <= ?) OR state='expired') ORDER BY deadline_ts LIMIT ?",
            (since_ts, now, limit),
        )
        return [_row_to_record(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    async def aclose(self) -> None:
        self.close()
