"""Governance state shared by several processes (SQLite) or machines (PostgreSQL, ``store.governance_dsn``):
every handle sees the others' revocations, parked runs and decisions, write transactions exclude each
other, and a handle pickled to another process reopens there.

``open_gov_db`` runs the tests that take it on both backends; each call opens another handle on the
same state (on PostgreSQL: its own connection pool, as another machine would have).
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from govkit import PG_DSN, MovableClock, pg_schema

from raygent.core.config import Fleet
from raygent.core.errors import StoreError
from raygent.core.govconfig import ApprovalsSpec
from raygent.core.interceptors import CallContext, ToolCallInput
from raygent.core.messages import ToolCall
from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditDraft
from raygent.core.store.postgres_audit import PostgresAuditLog
from raygent.governance.approvals import ApprovalBook
from raygent.governance.audit import AuditWriter
from raygent.governance.decision import PolicyDecision
from raygent.governance.killswitch import KillSwitch
from raygent.governance.parking import ParkingLot
from raygent.governance.pgstate import PgRow, PostgresGovernanceDB, shared_governance_db
from raygent.governance.signing import Signer
from raygent.governance.spending import Reservation, SpendingLedger
from raygent.governance.state import GovernanceConn, GovernanceDB, GovernanceState, open_governance_db
from raygent.governance.statecopy import copy_governance_state

OpenDB = Callable[[], GovernanceState]


@pytest.fixture
def writer(tmp_path: Path, clock: MovableClock) -> AuditWriter:
    return AuditWriter(SQLiteStore(tmp_path / "store.db"), clock)


# ----- both backends ---------------------------------------------------------------------------------


async def test_a_revocation_through_one_handle_is_seen_and_undone_through_another(
    open_gov_db: OpenDB, governed_fleet: Fleet, writer: AuditWriter, clock: MovableClock
) -> None:
    here = KillSwitch(open_gov_db(), fleet=governed_fleet, writer=writer, clock=clock)
    there = KillSwitch(open_gov_db(), fleet=governed_fleet, writer=writer, clock=clock)
    await here.revoke("refunds", actor="root", reason="incident 7")
    seen = await there.is_revoked("svc-refunds@acme")
    assert seen is not None and (seen.actor, seen.reason) == ("root", "incident 7")
    assert [r.identity for r in await there.revoked()] == ["svc-refunds@acme"]
    assert await there.restore("svc-refunds@acme", actor="root") is True
    assert await here.is_revoked("svc-refunds@acme") is None
    assert await here.restore("refunds", actor="root") is False  # nothing left to restore


async def test_a_run_parked_through_one_handle_is_claimed_once(
    open_gov_db: OpenDB, clock: MovableClock
) -> None:
    here, there = ParkingLot(open_gov_db(), clock), ParkingLot(open_gov_db(), clock)
    await here.park("run_1", "support", {"step": 2, "note": "50% done"})
    await here.park("run_1", "support", {"step": 3, "note": "50% done"})  # parking again replaces it
    assert await there.is_parked("run_1")
    claims = await asyncio.gather(*(lot.claim("run_1") for lot in (here, there, here, there)))
    assert [c for c in claims if c is not None] == [{"step": 3, "note": "50% done"}]
    assert not await here.is_parked("run_1")


async def test_two_approvers_deciding_at_once_on_two_handles_both_count(
    open_gov_db: OpenDB, tmp_path: Path, writer: AuditWriter, clock: MovableClock
) -> None:
    spec = ApprovalsSpec(timeout_s=60, two_approvers_above_usd=400)
    signer = Signer.from_file(tmp_path / "keys" / "audit.pem")
    books = [
        ApprovalBook(open_gov_db(), spec=spec, signer=signer, writer=writer, clock=clock) for _ in range(2)
    ]
    ctx = CallContext(run_id="run_a", session_id="s", agent="refunds", identity="svc", requester="C7")
    call = ToolCall(id="c0", name="issue_refund", arguments={"order_id": "1", "amount_usd": 450})
    decision = PolicyDecision(True, ("approval",), ("big",), amount_usd=450)
    held = await books[0].hold(ToolCallInput(ctx, call), decision, None)
    # Read-check-write of the decisions list: without exclusive writes one approval would be lost.
    await asyncio.gather(
        books[0].decide(held.approval_id, approver="alice", decision="approve", reason=""),
        books[1].decide(held.approval_id, approver="bob", decision="approve", reason=""),
    )
    done = await books[1].get(held.approval_id)
    assert done.status == "approved" and sorted(done.approvers) == ["alice", "bob"]
    assert books[0].signatures_valid(done)


def test_a_handle_pickled_to_another_process_reopens_there(open_gov_db: OpenDB) -> None:
    db = open_gov_db()
    child = (
        "import pickle, sys\n"
        "db = pickle.load(sys.stdin.buffer)\n"
        "db.transact(lambda c: c.execute('INSERT INTO revocations (identity, reason, actor, ts) '\n"
        "    'VALUES (?, ?, ?, ?)', ('svc-x', 'from another process', 'child', 1.0)), write=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child], input=pickle.dumps(db), capture_output=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    row = db.transact(
        lambda c: c.execute("SELECT reason FROM revocations WHERE identity = ?", ("svc-x",)).fetchone(),
        write=False,
    )
    assert row is not None and row["reason"] == row[0] == "from another process"


def test_rows_are_read_by_index_and_by_name(open_gov_db: OpenDB) -> None:
    db = open_gov_db()

    def read(conn: GovernanceConn) -> Any:
        conn.execute("INSERT INTO revocations VALUES (?, ?, ?, ?)", ("i", "50% sure", "a", 2.5))
        return conn.execute("SELECT identity, reason, ts FROM revocations").fetchall()

    [row] = db.transact(read, write=True)
    assert (row[0], row["reason"], row["ts"], len(row), tuple(row)) == ("i", "50% sure", 2.5, 3, row[:])
    assert list(row.keys()) == ["identity", "reason", "ts"]


async def test_a_failed_transaction_leaves_nothing_behind(open_gov_db: OpenDB) -> None:
    db = open_gov_db()

    def half(conn: GovernanceConn) -> None:
        conn.execute("INSERT INTO revocations VALUES (?, ?, ?, ?)", ("i", "", "a", 1.0))
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):  # the caller's own error, not a StoreError
        await db.run(half, write=True)
    with pytest.raises(StoreError) as bad:
        await db.run(lambda c: c.execute("SELECT nope FROM revocations"), write=False)
    assert not bad.value.retryable  # a wrong statement does not get better by retrying
    count = await db.run(lambda c: c.execute("SELECT COUNT(*) FROM revocations").fetchone()[0], write=False)
    assert count == 0


def test_a_locked_sqlite_state_is_a_retryable_error(tmp_path: Path) -> None:
    db = GovernanceDB(tmp_path / "governance.db", busy_timeout_s=0.05)
    holder = sqlite3.connect(tmp_path / "governance.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(StoreError) as locked:
            db.transact(lambda c: c.execute("DELETE FROM revocations"), write=True)
        assert locked.value.retryable and "locked" in locked.value.detail
    finally:
        holder.close()


# ----- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture
def schema() -> Iterator[str]:
    with pg_schema() as name:
        yield name


def waiting_for_the_write_lock(db: PostgresGovernanceDB) -> bool:
    """Whether some transaction waits for ``db``'s write lock (a bigint advisory lock shows its high
    and low 32 bits as classid and objid)."""
    key = db.lock_key & 0xFFFFFFFFFFFFFFFF
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            (key >> 32, key & 0xFFFFFFFF),
        ).fetchone()
    return bool(row and row[0])


class PausingDB:
    """Another machine's handle whose next write pauses after its first statement (the reservation's
    read of the day's total) until ``resume`` is set."""

    def __init__(self, inner: GovernanceState) -> None:
        self._inner = inner
        self.read_done, self.resume = threading.Event(), threading.Event()

    def transact(self, fn: Callable[[GovernanceConn], Any], *, write: bool) -> Any:
        pausing = self

        class Conn:
            def __init__(self, conn: GovernanceConn) -> None:
                self._conn, self._first = conn, True

            def execute(self, sql: str, parameters: Any = (), /) -> Any:
                cursor = self._conn.execute(sql, parameters)
                if self._first:
                    self._first = False
                    pausing.read_done.set()
                    assert pausing.resume.wait(300), "the test never resumed the paused write"
                return cursor

        return self._inner.transact(lambda conn: fn(Conn(conn)), write=write)

    async def run(self, fn: Callable[[GovernanceConn], Any], *, write: bool) -> Any:
        return await asyncio.to_thread(self.transact, fn, write=write)


@pytest.mark.integration
async def test_two_machines_cannot_both_squeeze_under_the_cap(schema: str, clock: MovableClock) -> None:
    first = PausingDB(PostgresGovernanceDB(PG_DSN, schema=schema))
    second = PostgresGovernanceDB(PG_DSN, schema=schema)
    one, two = SpendingLedger(first, clock), SpendingLedger(second, clock)

    def reserve(ledger: SpendingLedger, key: str) -> asyncio.Task[Reservation]:
        return asyncio.create_task(
            ledger.reserve(agent="refunds", tool="issue_refund", call_key=key, amount_usd=600, limit_usd=1000)
        )

    a = reserve(one, "a")
    try:
        await asyncio.to_thread(first.read_done.wait, 300)  # machine 1 has read $0 spent and is paused
        b = reserve(two, "b")
        # Machine 2 must wait for machine 1's write transaction; finishing first means both read $0.
        for _ in range(6000):
            if b.done() or await asyncio.to_thread(waiting_for_the_write_lock, second):
                break
            await asyncio.sleep(0.005)
        assert not b.done(), "machine 2 reserved while machine 1 was between its check and its write"
    finally:
        first.resume.set()
    assert [(await a).ok, (await b).ok] == [True, False]
    assert await two.spent_today("refunds", "issue_refund") == 600


@pytest.mark.integration
def test_errors_name_the_database_but_never_the_password() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StoreError) as refused:
        PostgresGovernanceDB(f"postgresql://raygent:hunter2-s3cret@127.0.0.1:{port}/gov", busy_timeout_s=2)
    text = f"{refused.value} {refused.value.__cause__!r} {refused.value.__context__!r}"
    assert refused.value.retryable and f"127.0.0.1:{port}/gov" in str(refused.value)
    assert "hunter2" not in text


@pytest.mark.integration
def test_the_fleet_file_picks_the_backend(schema: str, governed_fleet: Fleet) -> None:
    assert isinstance(open_governance_db(governed_fleet), GovernanceDB)
    shared = governed_fleet.model_copy(
        update={
            "store": governed_fleet.store.model_copy(
                update={"governance_dsn": PG_DSN, "audit_schema": schema}
            )
        }
    )
    db = open_governance_db(shared)
    assert isinstance(db, PostgresGovernanceDB) and db.schema == schema
    assert open_governance_db(shared) is db  # one pool per process and database
    assert pickle.loads(pickle.dumps(db)) is db  # unpickled in the same process: the same pool
    assert shared_governance_db(PG_DSN, schema=schema, busy_timeout_s=shared.store.busy_timeout_s) is db


def test_pg_rows_pickle() -> None:
    row = PgRow(("a", 1), {"x": 0, "y": 1})
    again = pickle.loads(pickle.dumps(row))
    assert again == ("a", 1) and again["y"] == 1
    with pytest.raises(IndexError):
        _ = row["z"]


@pytest.mark.integration
async def test_the_audit_trail_and_the_governance_state_share_a_schema(schema: str) -> None:
    # Both create the schema: opened at once, neither may trip over the other's CREATE … IF NOT EXISTS.
    log, db = await asyncio.gather(
        asyncio.to_thread(PostgresAuditLog, PG_DSN, schema=schema),
        asyncio.to_thread(PostgresGovernanceDB, PG_DSN, schema=schema),
    )
    try:
        await log.append_audit([AuditDraft(ts=1.0, kind="action", run_id="r", session_id="s", agent="a",
                                           identity="i", payload={})])  # fmt: skip
        assert (await log.verify_audit()).ok
        count = await db.run(lambda c: c.execute("SELECT COUNT(*) FROM approvals").fetchone(), write=False)
        assert count[0] == 0
    finally:
        await log.close()
        db.close()


@pytest.mark.integration
async def test_copying_sqlite_state_to_postgres_keeps_rows_already_there(
    schema: str, tmp_path: Path, writer: AuditWriter, clock: MovableClock
) -> None:
    source = GovernanceDB(tmp_path / "governance.db")
    target = PostgresGovernanceDB(PG_DSN, schema=schema)
    spec = ApprovalsSpec(timeout_s=60, two_approvers_above_usd=400)
    signer = Signer.from_file(tmp_path / "keys" / "audit.pem")
    old_book = ApprovalBook(source, spec=spec, signer=signer, writer=writer, clock=clock)
    ctx = CallContext(run_id="run_a", session_id="s", agent="refunds", identity="svc", requester="C7")
    call = ToolCall(id="c0", name="issue_refund", arguments={"order_id": "1", "amount_usd": 450})
    held = await old_book.hold(
        ToolCallInput(ctx, call), PolicyDecision(True, ("approval",), ("big",), amount_usd=450), None
    )
    await old_book.decide(held.approval_id, approver="alice", decision="approve", reason="first of two")
    await SpendingLedger(source, clock).reserve(
        agent="refunds", tool="issue_refund", call_key="k1", amount_usd=120, limit_usd=1000
    )
    source.transact(
        lambda c: c.execute("INSERT INTO revocations VALUES (?, ?, ?, ?)", ("svc-x", "old", "a", 1.0)),
        write=True,
    )
    target.transact(
        lambda c: c.execute("INSERT INTO revocations VALUES (?, ?, ?, ?)", ("svc-x", "newer", "b", 2.0)),
        write=True,
    )

    report = copy_governance_state(source, target)
    assert report.read == {"approvals": 1, "spend": 1, "revocations": 1, "parked_runs": 0, "checkpoints": 0}
    assert report.written == {**report.read, "revocations": 0}  # the row PostgreSQL had is kept
    new_book = ApprovalBook(target, spec=spec, signer=signer, writer=writer, clock=clock)
    moved = await new_book.get(held.approval_id)
    assert (moved.status, moved.approvers, moved.amount_usd, moved.arguments) == (
        "pending",
        ["alice"],
        450,
        {"order_id": "1", "amount_usd": 450},
    )
    assert new_book.signatures_valid(moved)  # the decision's signature came along
    done = await new_book.decide(held.approval_id, approver="bob", decision="approve", reason="second")
    assert done.status == "approved"  # four-eyes goes on where it stopped
    assert await SpendingLedger(target, clock).spent_today("refunds", "issue_refund") == 120
    reason = target.transact(lambda c: c.execute("SELECT reason FROM revocations").fetchone()[0], write=False)
    assert reason == "newer"
    assert copy_governance_state(source, target).written == dict.fromkeys(
        report.read, 0
    )  # again: nothing new
