"""Copying a fleet's governance state from its SQLite file into PostgreSQL (``store.governance_dsn``).

A fleet that moves to shared governance state keeps what it already has: pending approvals (and the
decisions on them), today's spending reservations, revoked identities, parked runs and the signed audit
checkpoints. Rows are copied table by table in one write transaction on PostgreSQL, each only if its key
is not there yet, so the copy can be run again (after a partial run, or to pick up rows written since)
and never overwrites what the shared state already holds. Stop the fleet's old processes first: a row
written to the SQLite file after the copy is not carried over until the next run.
"""

from __future__ import annotations

from dataclasses import dataclass

from raygent.governance.state import GovernanceConn, GovernanceState

__all__ = ["TABLES", "CopyReport", "copy_governance_state"]

# Table -> its key columns (what "already there" means).
TABLES: dict[str, tuple[str, ...]] = {
    "approvals": ("approval_id",),
    "spend": ("call_key",),
    "revocations": ("identity",),
    "parked_runs": ("run_id",),
    "checkpoints": ("seq",),
}


@dataclass(frozen=True, slots=True)
class CopyReport:
    """Per table: rows read from the source, and rows the target did not have yet (written)."""

    read: dict[str, int]
    written: dict[str, int]


def copy_governance_state(source: GovernanceState, target: GovernanceState) -> CopyReport:
    """Copy every governance table from ``source`` into ``target``; rows whose key exists are kept.

    Raises:
        StoreError: Either database failed (nothing is written to ``target`` then).
    """

    def read(conn: GovernanceConn) -> dict[str, tuple[list[str], list[tuple[object, ...]]]]:
        tables = {}
        for table in TABLES:
            fetched = conn.execute(f"SELECT * FROM {table}").fetchall()
            # A row iterates over its values; keys() names its columns (sqlite3.Row, PgRow).
            columns = [str(c) for c in fetched[0].keys()] if fetched else []  # noqa: SIM118
            tables[table] = (columns, [tuple(row) for row in fetched])
        return tables

    tables = source.transact(read, write=False)

    def write(conn: GovernanceConn) -> dict[str, int]:
        written: dict[str, int] = {}
        for table, (columns, rows) in tables.items():
            if not rows:
                written[table] = 0
                continue
            keys = ", ".join(TABLES[table])
            marks = ", ".join("?" * len(columns))
            sql = (
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                f"ON CONFLICT ({keys}) DO NOTHING RETURNING 1"
            )
            written[table] = sum(1 for row in rows if conn.execute(sql, row).fetchone() is not None)
        return written

    written = target.transact(write, write=True)
    return CopyReport(read={table: len(rows) for table, (_, rows) in tables.items()}, written=written)
