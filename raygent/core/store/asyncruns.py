"""The async-run ledger: runs accepted with ``202`` that a dispatcher still owes work or a callback.

An entry is written before the ``202`` goes out, so an accepted run is never only in memory. A
dispatcher *claims* an entry with a lease and renews it while the run is in flight; when a dispatcher
dies its leases run out and another one (or the restarted one) takes the entries over: it dispatches
runs that never started, finishes runs whose agent already finished, and resumes callback deliveries.

A protocol, so a Redis backend can provide it; the SQLite ledger shares the idempotency ledger's file.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from raygent.core.errors import ConflictError
from raygent.core.store.sqlfile import SQLiteFile

__all__ = ["AsyncRunEntry", "AsyncRunLedger", "DeliveryState", "SQLiteAsyncRunLedger"]

AsyncRunState = Literal["queued", "dispatched", "finished"]
DeliveryState = Literal["none", "pending", "delivered", "failed"]


@dataclass(slots=True)
class AsyncRunEntry:
    """What a dispatcher needs to start a run, and what happened to its callback."""

    run_id: str
    agent: str
    session_id: str
    input: str
    priority: str
    accepted_at: float
    deadline_ts: float  # wall-clock epoch seconds
    tenant: str = "default"
    callback_url: str | None = None
    traceparent: str | None = None
    latency_budget_ms: float | None = None
    # Governance: who asked and for whom, carried into the run (policies see both; ownership checks use
    # them). Entries written before these fields existed load with ''.
    requester: str = ""
    end_user: str = ""
    state: AsyncRunState = "queued"
    owner: str | None = None
    lease_until: float = 0.0
    cancel_requested: bool = False
    outcome: dict[str, Any] | None = None  # the final run body the callback carries
    delivery: DeliveryState = "none"
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AsyncRunEntry:
        return cls(**data)

    @property
    def open(self) -> bool:
        """Whether a dispatcher still owes this entry something (the run or its callback)."""
        return self.state != "finished" or self.delivery == "pending"


class AsyncRunLedger(Protocol):
    """Durable async-run entries with leases; every method is atomic across processes."""

    async def add(self, entry: AsyncRunEntry) -> None:
        """Insert; ConflictError if the run id exists."""
        ...

    async def get(self, run_id: str) -> AsyncRunEntry | None: ...

    async def claim(self, run_id: str, owner: str, *, now: float, lease_s: float) -> AsyncRunEntry | None:
        """Take the lease of an open entry that is unowned, owned by ``owner`` or whose lease ran out."""
        ...

    async def save(self, entry: AsyncRunEntry, *, owner: str) -> bool:
        """Replace the entry if ``owner`` still holds its lease; False when another dispatcher took it."""
        ...

    async def renew(self, owner: str, run_ids: list[str], *, lease_until: float) -> list[str]:
        """Extend ``owner``'s leases; returns the ids among them whose cancellation was requested."""
        ...

    async def expired(self, *, now: float, limit: int) -> list[AsyncRunEntry]:
        """Open entries whose lease ran out (their dispatcher is gone), oldest first."""
        ...

    async def request_cancel(self, run_id: str) -> AsyncRunEntry | None:
        """Mark the entry for cancellation; returns it as it is now, or None."""
        ...

    async def close(self) -> None: ...


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS async_runs (
        run_id TEXT PRIMARY KEY,
        is_open INTEGER NOT NULL,
        owner TEXT,
        lease_until REAL NOT NULL,
        accepted_at REAL NOT NULL,
        doc TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS async_runs_open ON async_runs (is_open, lease_until)",
)


def _params(entry: AsyncRunEntry) -> tuple[Any, ...]:
    return (
        entry.run_id,
        int(entry.open),
        entry.owner,
        entry.lease_until,
        entry.accepted_at,
        json.dumps(entry.to_dict()),
    )


def _load(conn: sqlite3.Connection, run_id: str) -> AsyncRunEntry | None:
    row = conn.execute("SELECT doc FROM async_runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else AsyncRunEntry.from_dict(json.loads(row["doc"]))


def _store(conn: sqlite3.Connection, entry: AsyncRunEntry) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO async_runs (run_id, is_open, owner, lease_until, accepted_at, doc) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        _params(entry),
    )


class SQLiteAsyncRunLedger:
    """:class:`AsyncRunLedger` on a SQLite file shared by every ingress replica of a fleet."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0) -> None:
        self._db = SQLiteFile(path, _SCHEMA, busy_timeout_s=busy_timeout_s)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_async, (str(self._db.path), self._db.busy_timeout_s))

    async def add(self, entry: AsyncRunEntry) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if _load(conn, entry.run_id) is not None:
                raise ConflictError(f"async run {entry.run_id!r} already exists")
            _store(conn, entry)

        await self._db.call(write, write=True)

    async def get(self, run_id: str) -> AsyncRunEntry | None:
        return await self._db.call(lambda conn: _load(conn, run_id), write=False)

    async def claim(self, run_id: str, owner: str, *, now: float, lease_s: float) -> AsyncRunEntry | None:
        def write(conn: sqlite3.Connection) -> AsyncRunEntry | None:
            entry = _load(conn, run_id)
            if entry is None or not entry.open:
                return None
            if entry.owner not in (None, owner) and entry.lease_until > now:
                return None
            entry.owner, entry.lease_until = owner, now + lease_s
            _store(conn, entry)
            return entry

        return await self._db.call(write, write=True)

    async def save(self, entry: AsyncRunEntry, *, owner: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            current = _load(conn, entry.run_id)
            if current is None or current.owner != owner:
                return False
            # A cancel request may have landed since the owner read the entry; never drop it.
            entry.cancel_requested = entry.cancel_requested or current.cancel_requested
            _store(conn, entry)
            return True

        return await self._db.call(write, write=True)

    async def renew(self, owner: str, run_ids: list[str], *, lease_until: float) -> list[str]:
        if not run_ids:
            return []

        def write(conn: sqlite3.Connection) -> list[str]:
            cancelled = []
            for run_id in run_ids:
                entry = _load(conn, run_id)
                if entry is not None and entry.owner == owner:
                    entry.lease_until = lease_until
                    _store(conn, entry)
                    if entry.cancel_requested and entry.state != "finished":
                        cancelled.append(run_id)
            return cancelled

        return await self._db.call(write, write=True)

    async def expired(self, *, now: float, limit: int) -> list[AsyncRunEntry]:
        def read(conn: sqlite3.Connection) -> list[AsyncRunEntry]:
            rows = conn.execute(
                "SELECT doc FROM async_runs WHERE is_open = 1 AND lease_until <= ? "
                "ORDER BY accepted_at LIMIT ?",
                (now, max(0, limit)),
            ).fetchall()
            return [AsyncRunEntry.from_dict(json.loads(row["doc"])) for row in rows]

        return await self._db.call(read, write=False)

    async def request_cancel(self, run_id: str) -> AsyncRunEntry | None:
        def write(conn: sqlite3.Connection) -> AsyncRunEntry | None:
            entry = _load(conn, run_id)
            if entry is None:
                return None
            if entry.state != "finished":
                entry.cancel_requested = True
                _store(conn, entry)
            return entry

        return await self._db.call(write, write=True)

    async def close(self) -> None:
        self._db.close()


def _reopen_async(path: str, busy_timeout_s: float) -> SQLiteAsyncRunLedger:
    return SQLiteAsyncRunLedger(path, busy_timeout_s=busy_timeout_s)
