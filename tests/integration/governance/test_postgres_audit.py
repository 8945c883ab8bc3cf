"""The audit trail on the real PostgreSQL at 127.0.0.1:5432: append-only by trigger, one linear chain
under concurrent writers, and tampering done directly in the database found at its first record."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from raygent.core.errors import StoreError
from raygent.core.fleetfile import load_fleet
from raygent.core.store import open_store
from raygent.core.store.base import AuditDraft, AuditQuery
from raygent.core.store.postgres_audit import PostgresAuditLog

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "fleet.yaml"


def reachable() -> bool:
    try:
        with psycopg.connect(DSN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture
def schema() -> Iterator[str]:
    if not reachable():
        pytest.fail(f"PostgreSQL is not reachable at {DSN}; the governance audit tests need it")
    name = f"rg_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
async def log(schema: str) -> AsyncIterator[PostgresAuditLog]:
    opened = PostgresAuditLog(DSN, schema=schema)
    yield opened
    await opened.close()


def drafts(n: int, tag: str = "w") -> list[AuditDraft]:
    return [
        AuditDraft(ts=time.time(), kind="action", run_id=f"run_{tag}", session_id="s", agent="refunds",
                   identity="svc", payload={"n": i, "tool": "issue_refund" if i % 2 else "lookup_order"})
        for i in range(n)
    ]  # fmt: skip


def tamper(schema: str, *statements: str) -> None:
    """Run statements as a superuser with triggers off: what an attacker with database access can do."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for statement in statements:
            conn.execute(statement.format(s=schema))


async def test_append_query_and_verify(log: PostgresAuditLog) -> None:
    written = await log.append_audit(drafts(5))
    assert [r.seq for r in written] == [1, 2, 3, 4, 5]
    assert (await log.query_audit(AuditQuery(after_seq=0))) == written
    assert [r.seq for r in await log.query_audit(AuditQuery(tool="issue_refund"))] == [2, 4]
    result = await log.verify_audit()
    assert result.ok and result.records_checked == 5


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {s}.audit SET payload = '{{}}' WHERE seq = 2",
        "DELETE FROM {s}.audit WHERE seq = 5",
        "TRUNCATE {s}.audit",
        "UPDATE {s}.audit_head SET seq = 1",
        "DELETE FROM {s}.audit_head",
        "INSERT INTO {s}.audit SELECT seq + 10, prev_hash, hash, ts, trace_id, run_id, session_id, agent, "
        "identity, kind, payload, payload_sha256 FROM {s}.audit WHERE seq = 1",
    ],
)
async def test_triggers_refuse_changes(log: PostgresAuditLog, schema: str, statement: str) -> None:
    await log.append_audit(drafts(5))
    with psycopg.connect(DSN, autocommit=True) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute(statement.format(s=schema))
    assert (await log.verify_audit()).ok


@pytest.mark.parametrize(
    ("case", "statements", "first_bad"),
    [
        ("edit", ["UPDATE {s}.audit SET payload = '{{\"n\": 99}}' WHERE seq = 3"], 3),
        ("edit-metadata", ["UPDATE {s}.audit SET agent = 'someone-else' WHERE seq = 4"], 4),
        ("delete", ["DELETE FROM {s}.audit WHERE seq = 3"], 3),
        (
            "reorder",
            [
                "UPDATE {s}.audit SET seq = -1 WHERE seq = 3",
                "UPDATE {s}.audit SET seq = 3 WHERE seq = 4",
                "UPDATE {s}.audit SET seq = 4 WHERE seq = -1",
            ],
            3,
        ),
        ("truncate", ["DELETE FROM {s}.audit WHERE seq > 4"], 5),
        ("truncate-all", ["TRUNCATE {s}.audit"], 1),
    ],
)
async def test_tampering_is_found_at_the_first_bad_seq(
    log: PostgresAuditLog, schema: str, case: str, statements: list[str], first_bad: int
) -> None:
    await log.append_audit(drafts(6))
    tamper(schema, *statements)
    result = await log.verify_audit()
    assert not result.ok, case
    assert result.first_bad_seq == first_bad, (case, result)


async def test_a_splice_from_another_chain_is_found(log: PostgresAuditLog, schema: str) -> None:
    other_schema = f"{schema}_other"
    other = PostgresAuditLog(DSN, schema=other_schema)
    try:
        await log.append_audit(drafts(6, "real"))
        await other.append_audit(drafts(6, "forged"))
        tamper(
            schema,
            "DELETE FROM {s}.audit WHERE seq IN (3, 4)",
            f"INSERT INTO {{s}}.audit SELECT * FROM {other_schema}.audit WHERE seq IN (3, 4)",
        )
        result = await log.verify_audit()
        assert not result.ok and result.first_bad_seq == 3
        assert "prev_hash" in result.reason
    finally:
        await other.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {other_schema} CASCADE")


async def test_concurrent_writers_keep_one_linear_chain(log: PostgresAuditLog, schema: str) -> None:
    second = PostgresAuditLog(DSN, schema=schema)  # another "machine": its own connections
    try:
        writers = [(log if i % 2 else second).append_audit(drafts(3, f"w{i}")) for i in range(40)]
        await asyncio.gather(*writers)
        records = await log.query_audit(AuditQuery(limit=1000))
        assert [r.seq for r in records] == list(range(1, 121))
        # Each writer's batch stayed contiguous and in order.
        for tag in {r.run_id for r in records}:
            seqs = [r.seq for r in records if r.run_id == tag]
            assert seqs == list(range(seqs[0], seqs[0] + 3))
        assert (await second.verify_audit()).ok
    finally:
        await second.close()


async def test_the_fleet_store_can_keep_its_audit_in_postgres(schema: str, tmp_path: Path) -> None:
    fleet = load_fleet(EXAMPLE, state_dir=tmp_path)
    fleet = fleet.model_copy(
        update={"store": fleet.store.model_copy(update={"audit_dsn": DSN, "audit_schema": schema})}
    )
    store = open_store(fleet)
    try:
        await store.append_audit(drafts(2))
        assert (await store.verify_audit()).ok
        assert await store.get_session("nobody") is None  # sessions still in the fleet's SQLite store
    finally:
        await store.close()
    with psycopg.connect(DSN) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.audit").fetchone() == (2,)


async def test_unreachable_database_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        PostgresAuditLog("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1", schema="x")
