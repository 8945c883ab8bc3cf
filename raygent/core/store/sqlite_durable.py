"""Checkpoints and the tool-effect ledger on SQLite: the durable-execution half of :class:`SQLiteStore`.

Kept beside ``sqlite.py`` as a mixin so each file holds one concept. Every method runs inside the
store's ``BEGIN IMMEDIATE`` transaction, which makes each compare-and-set atomic across processes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from raygent.core.clock import Clock
from raygent.core.errors import ConflictError, NotFoundError
from raygent.core.store.base import canonical_json
from raygent.core.store.durable import Checkpoint, CheckpointWrite, EffectRecord

__all__ = ["SCHEMA_V2", "SQLiteDurableMixin"]

T = TypeVar("T")

# Schema version 2 of the SQLite store: appended to its migration list, never edited once released.
SCHEMA_V2: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS checkpoints (
        key TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        base BLOB NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoint_deltas (
        key TEXT NOT NULL,
        version INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (key, version)
    )""",
    """CREATE TABLE IF NOT EXISTS effects (
        key TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        started_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        outcome TEXT,
        reason TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS effects_by_run ON effects (run_id)",
)

_EFFECT_COLUMNS = "key, run_id, tool, fingerprint, status, attempts, started_at, updated_at, outcome, reason"


def _effect_from_row(row: sqlite3.Row) -> EffectRecord:
    return EffectRecord(
        key=row["key"],
        run_id=row["run_id"],
        tool=row["tool"],
        fingerprint=row["fingerprint"],
        status=row["status"],
        attempts=row["attempts"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        outcome=None if row["outcome"] is None else json.loads(row["outcome"]),
        reason=row["reason"],
    )


def _apply_checkpoint(conn: sqlite3.Connection, write: CheckpointWrite, now: float) -> bool:
    row = conn.execute("SELECT version FROM checkpoints WHERE key = ?", (write.key,)).fetchone()
    current = 0 if row is None else row["version"]
    if current != write.version - 1 or (write.delta and row is None):
        return False
    if write.delta:
        conn.execute(
            "INSERT INTO checkpoint_deltas (key, version, data) VALUES (?, ?, ?)",
            (write.key, write.version, write.data),
        )
        conn.execute(
            "UPDATE checkpoints SET version = ?, schema_version = ?, updated_at = ? WHERE key = ?",
            (write.version, write.schema_version, now, write.key),
        )
        return True
    conn.execute("DELETE FROM checkpoint_deltas WHERE key = ?", (write.key,))
    conn.execute(
        "INSERT INTO checkpoints (key, version, schema_version, base, updated_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET version = excluded.version, "
        "schema_version = excluded.schema_version, base = excluded.base, updated_at = excluded.updated_at",
        (write.key, write.version, write.schema_version, write.data, now),
    )
    return True


class SQLiteDurableMixin:
    """Checkpoint and effect-ledger methods of the Store protocol; mixed into SQLiteStore."""

    _clock: Clock

    async def _call(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        raise NotImplementedError  # provided by SQLiteStore

    # ----- checkpoints -------------------------------------------------------------------------------

    async def put_checkpoints(self, writes: list[CheckpointWrite]) -> None:
        """Apply each compare-and-set write; one transaction for the whole batch.

        Raises:
            ConflictError: Some writes did not follow the stored version (``extra["keys"]``); the
                others were applied.
        """
        if not writes:
            return
        now = self._clock.now()

        def write(conn: sqlite3.Connection) -> list[str]:
            return [w.key for w in writes if not _apply_checkpoint(conn, w, now)]

        conflicts = await self._call(write, write=True)
        if conflicts:
            raise ConflictError(
                f"checkpoint version conflict on {', '.join(sorted(set(conflicts)))}",
                extra={"keys": conflicts},
            )

    async def get_checkpoint(self, key: str) -> Checkpoint | None:
        """The base and deltas of ``key`` in one consistent read, or ``None``."""

        def read(conn: sqlite3.Connection) -> Checkpoint | None:
            row = conn.execute(
                "SELECT version, schema_version, base, updated_at FROM checkpoints WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            deltas = conn.execute(
                "SELECT data FROM checkpoint_deltas WHERE key = ? ORDER BY version", (key,)
            ).fetchall()
            return Checkpoint(
                key=key,
                version=row["version"],
                schema_version=row["schema_version"],
                base=bytes(row["base"]),
                deltas=tuple(bytes(d["data"]) for d in deltas),
                updated_at=row["updated_at"],
            )

        return await self._call(read, write=False)

    async def delete_checkpoint(self, key: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM checkpoint_deltas WHERE key = ?", (key,))
            conn.execute("DELETE FROM checkpoints WHERE key = ?", (key,))

        await self._call(write, write=True)

    # ----- the effect ledger -------------------------------------------------------------------------

    async def get_effect(self, key: str) -> EffectRecord | None:
        def read(conn: sqlite3.Connection) -> EffectRecord | None:
            row = conn.execute(f"SELECT {_EFFECT_COLUMNS} FROM effects WHERE key = ?", (key,)).fetchone()
            return None if row is None else _effect_from_row(row)

        return await self._call(read, write=False)

    async def begin_effect(
        self, key: str, *, run_id: str, tool: str, fingerprint: str, now: float, expected_attempts: int
    ) -> EffectRecord:
        """Record a new attempt as ``intended`` (compare-and-set on the attempt count).

        Raises:
            ConflictError: The stored attempt count is not ``expected_attempts`` or the call is settled.
        """

        def write(conn: sqlite3.Connection) -> EffectRecord:
            row = conn.execute(f"SELECT {_EFFECT_COLUMNS} FROM effects WHERE key = ?", (key,)).fetchone()
            attempts = 0 if row is None else row["attempts"]
            if attempts != expected_attempts or (row is not None and row["status"] != "intended"):
                raise ConflictError(
                    f"effect {key!r} has {attempts} attempts"
                    + ("" if row is None else f" and is {row['status']}"),
                    extra={"key": key, "attempts": attempts},
                )
            conn.execute(
                f"INSERT INTO effects ({_EFFECT_COLUMNS}) VALUES (?, ?, ?, ?, 'intended', ?, ?, ?, NULL, '') "
                "ON CONFLICT (key) DO UPDATE SET attempts = excluded.attempts, "
                "started_at = excluded.started_at, updated_at = excluded.updated_at",
                (key, run_id, tool, fingerprint, attempts + 1, now, now),
            )
            return EffectRecord(key, run_id, tool, fingerprint, "intended", attempts + 1, now, now)

        return await self._call(write, write=True)

    async def settle_effect(
        self,
        key: str,
        *,
        status: Literal["done", "needs_approval"],
        outcome: dict[str, Any] | None,
        reason: str,
        now: float,
        expected_attempts: int | None = None,
    ) -> EffectRecord:
        """Record the outcome; a ``done`` record is final and is returned unchanged, and so is one whose
        attempt count is not ``expected_attempts`` (when given).

        Raises:
            NotFoundError: No attempt of ``key`` was begun.
        """
        outcome_json = None if outcome is None else canonical_json(outcome)

        def write(conn: sqlite3.Connection) -> EffectRecord:
            row = conn.execute(f"SELECT {_EFFECT_COLUMNS} FROM effects WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise NotFoundError(f"effect {key!r} was never begun", extra={"key": key})
            if row["status"] == "done" or (
                expected_attempts is not None and row["attempts"] != expected_attempts
            ):
                return _effect_from_row(row)
            conn.execute(
                "UPDATE effects SET status = ?, outcome = ?, reason = ?, updated_at = ? WHERE key = ?",
                (status, outcome_json, reason, now, key),
            )
            updated = conn.execute(f"SELECT {_EFFECT_COLUMNS} FROM effects WHERE key = ?", (key,)).fetchone()
            return _effect_from_row(updated)

        return await self._call(write, write=True)

    async def reopen_effect(self, key: str, *, now: float, expected_attempts: int) -> EffectRecord:
        """Start a new attempt of a ``needs_approval`` call (compare-and-set on the attempt count).

        Raises:
            NotFoundError: No attempt of ``key`` was begun.
            ConflictError: The call is not ``needs_approval`` or its attempt count is not
                ``expected_attempts``.
        """

        def write(conn: sqlite3.Connection) -> EffectRecord:
            row = conn.execute(f"SELECT {_EFFECT_COLUMNS} FROM effects WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise NotFoundError(f"effect {key!r} was never begun", extra={"key": key})
            if row["attempts"] != expected_attempts or row["status"] != "needs_approval":
                raise ConflictError(
                    f"effect {key!r} has {row['attempts']} attempts and is {row['status']}",
                    extra={"key": key, "attempts": row["attempts"]},
                )
            conn.execute(
                "UPDATE effects SET status = 'intended', attempts = ?, started_at = ?, updated_at = ?, "
                "outcome = NULL, reason = '' WHERE key = ?",
                (expected_attempts + 1, now, now, key),
            )
            return EffectRecord(
                key,
                row["run_id"],
                row["tool"],
                row["fingerprint"],
                "intended",
                expected_attempts + 1,
                now,
                now,
            )

        return await self._call(write, write=True)
