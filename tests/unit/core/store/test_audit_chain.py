"""The audit hash chain: one linear chain under many writer processes, and tampering always found.

Tamper tests work on the database file with plain ``sqlite3``, the way someone with file access would:
they drop the protective triggers first, then edit rows.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygent.core.store import (
    GENESIS_HASH,
    AuditDraft,
    AuditQuery,
    AuditRecord,
    SQLiteStore,
    VerifyResult,
    canonical_json,
    record_hash,
    seal,
    sha256_hex,
    verify_chain,
)

WORKERS = 6
PER_WORKER = 50
COLUMNS = (
    "seq, prev_hash, hash, ts, trace_id, run_id, session_id, agent, identity, kind, payload, payload_sha256"
)
# Copies the last record with a new seq and/or prev_hash: a row that does not extend the chain.
COPY_LAST = f"INSERT INTO audit SELECT {{}}, {{}}, {COLUMNS.split(', ', 2)[2]} FROM audit WHERE seq = {{}}"
TRIGGERS = (
    "audit_no_update",
    "audit_no_delete",
    "audit_extends_chain",
    "audit_head_forward",
    "audit_head_no_delete",
)


def make_draft(n: int, *, agent: str = "triage") -> AuditDraft:
    return AuditDraft(
        ts=1_700_000_000.0 + n,
        kind="tool_call",
        run_id=f"run-{n % 3}",
        session_id="sess",
        agent=agent,
        identity=f"agent:{agent}",
        payload={"tool": "search", "n": n},
        trace_id=None,
    )


def _append_worker(path: str, worker: int, count: int, start: Any) -> None:
    """One writer process: open the shared file, wait for the others, append one record at a time."""

    async def run() -> None:
        store = SQLiteStore(path, busy_timeout_s=30.0)
        start.wait(30)
        for i in range(count):
            await store.append_audit([make_draft(i, agent=f"worker-{worker}")])
        await store.close()

    asyncio.run(run())


def test_many_processes_build_one_linear_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    # Create the schema once, so the workers race on appends rather than on setup.
    asyncio.run(SQLiteStore(path).close())
    ctx = multiprocessing.get_context("spawn")
    # A barrier, not an event: spawn start-up takes long enough that an early starter would finish
    # before the last one arrives, and the point is to have them all contend for the write lock.
    start = ctx.Barrier(WORKERS)
    procs = [
        ctx.Process(target=_append_worker, args=(str(path), w, PER_WORKER, start)) for w in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0] * WORKERS

    async def check() -> tuple[list[AuditRecord], VerifyResult]:
        store = SQLiteStore(path)
        records = await store.query_audit(AuditQuery(limit=10_000))
        result = await store.verify_audit()
        await store.close()
        return records, result

    records, result = asyncio.run(check())
    assert [r.seq for r in records] == list(range(1, WORKERS * PER_WORKER + 1))
    assert result == VerifyResult(ok=True, records_checked=WORKERS * PER_WORKER)
    # Every worker's records are all there, each worker's in its own order.
    for w in range(WORKERS):
        assert [r.payload["n"] for r in records if r.agent == f"worker-{w}"] == list(range(PER_WORKER))


# ----- tampering with the file -------------------------------------------------------------------------

CHAIN_LENGTH = 20


@pytest.fixture
def chain_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"

    async def fill() -> None:
        store = SQLiteStore(path)
        await store.append_audit([make_draft(n) for n in range(1, CHAIN_LENGTH + 1)])
        await store.close()

    asyncio.run(fill())
    return path


def tamper(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        for trigger in TRIGGERS:
            conn.execute(f"DROP TRIGGER {trigger}")
        for sql, params in statements:
            conn.execute(sql, params)


def verify(path: Path) -> VerifyResult:
    async def run() -> VerifyResult:
        store = SQLiteStore(path)
        try:
            return await store.verify_audit()
        finally:
            await store.close()

    return asyncio.run(run())


def row(path: Path, seq: int) -> dict[str, Any]:
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM audit WHERE seq = ?", (seq,)).fetchone())


def test_untouched_file_verifies(chain_file: Path) -> None:
    assert verify(chain_file) == VerifyResult(ok=True, records_checked=CHAIN_LENGTH)


@pytest.mark.parametrize(
    ("statements", "bad_seq", "reason"),
    [
        pytest.param(
            [("UPDATE audit SET payload = ? WHERE seq = 7", ('{"n":7,"tool":"delete_all"}',))],
            7,
            "payload does not match",
            id="edit-payload",
        ),
        pytest.param(
            [
                (
                    "UPDATE audit SET payload = ?, payload_sha256 = ? WHERE seq = 7",
                    ('{"n":7}', sha256_hex('{"n":7}')),
                )
            ],
            7,
            "hash does not match",
            id="edit-payload-and-digest",
        ),
        pytest.param(
            [("UPDATE audit SET hash = ? WHERE seq = 7", ("f" * 64,))],
            7,
            "hash does not match",
            id="edit-hash",
        ),
        pytest.param(
            [("UPDATE audit SET agent = 'root' WHERE seq = 12", ())],
            12,
            "hash does not match",
            id="edit-agent",
        ),
        pytest.param([("DELETE FROM audit WHERE seq = 7", ())], 7, "seq gap", id="delete-middle"),
        pytest.param([("DELETE FROM audit WHERE seq = 1", ())], 1, "seq gap", id="delete-first"),
        pytest.param(
            [
                ("UPDATE audit SET seq = -1 WHERE seq = 7", ()),
                ("UPDATE audit SET seq = 7 WHERE seq = 8", ()),
                ("UPDATE audit SET seq = 8 WHERE seq = -1", ()),
            ],
            7,
            "prev_hash",
            id="swap-two",
        ),
        pytest.param([("DELETE FROM audit WHERE seq > 15", ())], 16, "truncated", id="truncate-tail"),
        pytest.param([("DELETE FROM audit", ())], 1, "truncated", id="truncate-all"),
        pytest.param(
            [("UPDATE audit_head SET seq = 25", ())],
            21,
            "truncated",
            id="head-ahead",
        ),
        pytest.param(
            [("UPDATE audit_head SET hash = ?", ("e" * 64,))], CHAIN_LENGTH, "head's hash", id="head-hash"
        ),
        pytest.param([("DELETE FROM audit_head", ())], None, "head row is missing", id="head-deleted"),
    ],
)
def test_tampering_is_found(
    chain_file: Path, statements: list[tuple[str, tuple[Any, ...]]], bad_seq: int | None, reason: str
) -> None:
    tamper(chain_file, *statements)
    result = verify(chain_file)
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert reason in result.reason


def forged_record(seq: int, prev_hash: str) -> tuple[Any, ...]:
    """A record that is internally consistent: own digest and hash recomputed, linked to ``prev_hash``."""
    payload = {"tool": "wire_transfer", "amount": 1_000_000}
    digest = sha256_hex(canonical_json(payload))
    fields: dict[str, Any] = {
        "ts": 1_700_000_007.5,
        "trace_id": None,
        "run_id": "run-1",
        "session_id": "sess",
        "agent": "triage",
        "identity": "agent:triage",
        "kind": "tool_call",
    }
    chained = record_hash(seq=seq, prev_hash=prev_hash, payload_sha256=digest, **fields)
    return (seq, prev_hash, chained, *fields.values(), canonical_json(payload), digest)


def test_splice_insert_is_found_at_the_successor(chain_file: Path) -> None:
    forged = forged_record(8, row(chain_file, 7)["hash"])
    tamper(
        chain_file,
        # Make room at 8 (two steps, so the primary key never collides), then slip the forged row in and
        # move the head to the new end, as a careful attacker would.
        ("UPDATE audit SET seq = seq + 1000 WHERE seq >= 8", ()),
        ("UPDATE audit SET seq = seq - 999 WHERE seq >= 1000", ()),
        (f"INSERT INTO audit ({COLUMNS}) VALUES ({', '.join('?' * 12)})", forged),
        ("UPDATE audit_head SET seq = ?", (CHAIN_LENGTH + 1,)),
    )
    result = verify(chain_file)
    assert not result.ok
    assert result.first_bad_seq == 9
    assert result.records_checked == 8


def test_splice_replace_is_found_at_the_successor(chain_file: Path) -> None:
    forged = forged_record(8, row(chain_file, 7)["hash"])
    tamper(
        chain_file,
        ("DELETE FROM audit WHERE seq = 8", ()),
        (f"INSERT INTO audit VALUES ({', '.join('?' * 12)})", forged),
    )
    result = verify(chain_file)
    assert (result.ok, result.first_bad_seq) == (False, 9)
    assert "prev_hash" in result.reason


# ----- triggers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE audit SET payload = '{}' WHERE seq = 3", "append-only"),
        ("DELETE FROM audit WHERE seq = 3", "append-only"),
        ("DELETE FROM audit", "append-only"),
        ("UPDATE audit_head SET seq = 5", "only move forward"),
        (f"UPDATE audit_head SET hash = '{'a' * 64}'", "only move forward"),
        ("DELETE FROM audit_head", "only move forward"),
        (COPY_LAST.format("seq + 100", "prev_hash", CHAIN_LENGTH), "does not extend"),
        (COPY_LAST.format("seq + 1", f"'{GENESIS_HASH}'", CHAIN_LENGTH), "does not extend"),
    ],
)
def test_triggers_refuse_rewrites(chain_file: Path, sql: str, message: str) -> None:
    with closing(sqlite3.connect(chain_file)) as conn, pytest.raises(sqlite3.DatabaseError, match=message):
        conn.execute(sql)
    assert verify(chain_file).ok


# ----- verify_chain fuzz -------------------------------------------------------------------------------

_drafts = st.lists(
    st.builds(
        AuditDraft,
        ts=st.floats(0, 2e9, allow_nan=False),
        kind=st.sampled_from(["prompt", "tool_call", "model_call", "approval"]),
        run_id=st.text(max_size=3),
        session_id=st.just("s"),
        agent=st.sampled_from(["a", "b"]),
        identity=st.just("i"),
        payload=st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=3),
        trace_id=st.none() | st.text(max_size=3),
    ),
    min_size=1,
    max_size=12,
)

# Each field edit is guaranteed to change the value.
_FIELD_EDITS: dict[str, Callable[[AuditRecord], AuditRecord]] = {
    "payload": lambda r: replace(r, payload={**r.payload, "__extra__": 1}),
    "payload_sha256": lambda r: replace(
        r,
        payload_sha256="0" + r.payload_sha256[1:]
        if r.payload_sha256[0] != "0"
        else "1" + r.payload_sha256[1:],
    ),
    "hash": lambda r: replace(r, hash=r.hash[::-1] if r.hash[::-1] != r.hash else "f" * 64),
    "prev_hash": lambda r: replace(r, prev_hash="x" + r.prev_hash),
    "ts": lambda r: replace(r, ts=r.ts + 1.0),
    "agent": lambda r: replace(r, agent=r.agent + "!"),
    "kind": lambda r: replace(r, kind="error"),
    "trace_id": lambda r: replace(r, trace_id=(r.trace_id or "") + "!"),
    "seq": lambda r: replace(r, seq=r.seq + 7),
}


def _mutate(chain: list[AuditRecord], data: st.DataObject) -> tuple[list[AuditRecord], int]:
    """A mutated copy and the lowest seq whose position no longer holds the original record."""
    mutated = list(chain)
    i = data.draw(st.integers(0, len(chain) - 1), label="index")
    how = data.draw(
        st.sampled_from(["edit", "delete", "swap", "duplicate", "truncate", "splice"]), label="how"
    )
    if how == "edit":
        field = data.draw(st.sampled_from(sorted(_FIELD_EDITS)), label="field")
        mutated[i] = _FIELD_EDITS[field](chain[i])
    elif how == "delete":
        del mutated[i]
    elif how == "swap":
        j = (
            data.draw(st.integers(0, len(chain) - 1).filter(lambda j: j != i), label="other")
            if len(chain) > 1
            else i
        )
        if j == i:
            del mutated[i]  # a one-record chain has nothing to swap with
        else:
            i, j = min(i, j), max(i, j)
            mutated[i], mutated[j] = chain[j], chain[i]
    elif how == "duplicate":
        mutated.insert(i, chain[i])
        i += 1  # the first copy is still the genuine record at its place
    elif how == "truncate":
        mutated = mutated[:i]
    else:
        # Insert a self-consistent forged record at position i, linked to its predecessor.
        prev_seq, prev_hash = (chain[i - 1].seq, chain[i - 1].hash) if i else (0, GENESIS_HASH)
        [forged] = seal(
            [
                AuditDraft(
                    ts=1.0,
                    kind="action",
                    run_id="x",
                    session_id="s",
                    agent="evil",
                    identity="i",
                    payload={"f": 1},
                )
            ],
            prev_seq,
            prev_hash,
        )
        mutated.insert(i, forged)
        i += 1  # the forged record itself is well formed; its successor is where the chain breaks
    return mutated, chain[0].seq + i if i < len(chain) else chain[-1].seq + 1


@settings(max_examples=300, deadline=None)
@given(drafts=_drafts, start=st.integers(0, 5), data=st.data())
def test_verify_chain_finds_every_mutation(drafts: list[AuditDraft], start: int, data: st.DataObject) -> None:
    start_hash = GENESIS_HASH if start == 0 else sha256_hex(str(start))
    chain = seal(drafts, start, start_hash)
    head = (chain[-1].seq, chain[-1].hash)
    assert verify_chain(chain, expected_head=head, start=(start, start_hash)) == VerifyResult(
        ok=True, records_checked=len(chain)
    )

    mutated, mutated_seq = _mutate(chain, data)
    result = verify_chain(mutated, expected_head=head, start=(start, start_hash))
    assert not result.ok
    assert result.first_bad_seq is not None and result.first_bad_seq <= mutated_seq
    assert result.reason


def test_verify_chain_without_head_accepts_a_prefix() -> None:
    chain = seal([make_draft(n) for n in range(5)], 0, GENESIS_HASH)
    assert verify_chain(chain[:3], expected_head=None).ok
    result = verify_chain(chain[:3], expected_head=(5, chain[-1].hash))
    assert (result.ok, result.first_bad_seq, result.records_checked) == (False, 4, 3)


def test_seal_continues_from_the_head() -> None:
    first = seal([make_draft(1)], 0, GENESIS_HASH)
    second = seal([make_draft(2), make_draft(3)], first[-1].seq, first[-1].hash)
    assert [r.seq for r in first + second] == [1, 2, 3]
    assert second[0].prev_hash == first[0].hash
    assert verify_chain(first + second, expected_head=(3, second[-1].hash)).ok


def test_seal_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown audit kind 'nope'"):
        seal([replace(make_draft(1), kind="nope")], 0, GENESIS_HASH)  # type: ignore[arg-type]
