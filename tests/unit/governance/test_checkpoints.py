"""Signed checkpoints of the audit chain head: signed, checked, and tampering shows; kept on SQLite
and on PostgreSQL (``open_gov_db`` runs those tests on both)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from govkit import MovableClock

from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditDraft
from raygent.governance.checkpoints import Checkpointer
from raygent.governance.signing import Signer, load_or_create_key
from raygent.governance.state import GovernanceState


def drafts(n: int) -> list[AuditDraft]:
    return [
        AuditDraft(
            ts=time.time(),
            kind="action",
            run_id="r",
            session_id="s",
            agent="a",
            identity="i",
            payload={"n": i},
        )
        for i in range(n)
    ]


async def test_checkpoint_signs_the_head_and_verifies(
    tmp_path: Path, clock: MovableClock, open_gov_db: Callable[[], GovernanceState]
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    db = open_gov_db()
    cps = Checkpointer(store, db, signer=Signer.from_file(tmp_path / "k.pem"), clock=clock)
    await store.append_audit(drafts(3))
    first = await cps.checkpoint()
    assert first.seq == 3 and first.signature
    assert (await cps.checkpoint()) == first  # nothing appended: same checkpoint
    await store.append_audit(drafts(2))
    second = await cps.checkpoint()
    assert second.seq == 5
    assert [c.ok for c in await cps.verify()] == [True, True]
    assert await cps.checkpoint_if_due(3) is None  # nothing new since seq 5
    await store.append_audit(drafts(3))
    assert (await cps.checkpoint_if_due(3)).seq == 8  # type: ignore[union-attr]
    assert await cps.checkpoint_if_due(0) is None

    # Rewriting the record a checkpoint covers (triggers dropped) is caught.
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("UPDATE audit SET hash = 'f00' WHERE seq = 3")
    checks = await cps.verify()
    assert [(c.seq, c.ok) for c in checks] == [(3, False), (5, True), (8, True)]
    # A checkpoint forged without the key does not verify.
    db.transact(lambda c: c.execute("UPDATE checkpoints SET hash = 'abc' WHERE seq = 5"), write=True)
    assert "signature" in [c.reason for c in await cps.verify()][1]
    assert (await store.verify_audit()).first_bad_seq == 3
    await store.close()


def test_two_processes_agree_on_one_key(tmp_path: Path) -> None:
    a = load_or_create_key(tmp_path / "k.pem")
    b = load_or_create_key(tmp_path / "k.pem")
    assert Signer(a).key_id == Signer(b).key_id
    assert Signer(b).verify({"x": 1}, Signer(a).sign({"x": 1}))
    assert not Signer(b).verify({"x": 2}, Signer(a).sign({"x": 1}))


async def test_two_checkpointers_racing_write_one_checkpoint(
    tmp_path: Path, clock: MovableClock, open_gov_db: Callable[[], GovernanceState]
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    signer = Signer.from_file(tmp_path / "k.pem")
    one, two = (Checkpointer(store, open_gov_db(), signer=signer, clock=clock) for _ in range(2))
    await store.append_audit(drafts(3))
    # Both see no checkpoint yet and sign seq 3; the second insert is a no-op, not an error.
    first, second = await asyncio.gather(one.checkpoint(), two.checkpoint())
    assert first.seq == second.seq == 3
    assert [c.seq for c in await two.all()] == [3]
    assert [c.ok for c in await one.verify()] == [True]
    await store.close()
