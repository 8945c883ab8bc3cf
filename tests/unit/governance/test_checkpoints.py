"""Signed checkpoints of the audit chain head: signed, checked, and tampering shows."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from govkit import MovableClock

from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditDraft
from raygent.governance.checkpoints import Checkpointer
from raygent.governance.signing import Signer, load_or_create_key
from raygent.governance.state import GovernanceDB


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


async def test_checkpoint_signs_the_head_and_verifies(tmp_path: Path, clock: MovableClock) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    cps = Checkpointer(
        store, GovernanceDB(tmp_path / "g.db"), signer=Signer.from_file(tmp_path / "k.pem"), clock=clock
    )
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
    with sqlite3.connect(tmp_path / "g.db") as conn:
        conn.execute("UPDATE checkpoints SET hash = 'abc' WHERE seq = 5")
    assert "signature" in [c.reason for c in await cps.verify()][1]
    assert (await store.verify_audit()).first_bad_seq == 3
    await store.close()


def test_two_processes_agree_on_one_key(tmp_path: Path) -> None:
    a = load_or_create_key(tmp_path / "k.pem")
    b = load_or_create_key(tmp_path / "k.pem")
    assert Signer(a).key_id == Signer(b).key_id
    assert Signer(b).verify({"x": 1}, Signer(a).sign({"x": 1}))
    assert not Signer(b).verify({"x": 2}, Signer(a).sign({"x": 1}))
