"""Ed25519-signed checkpoints of the audit chain head.

A checkpoint says "the chain had ``seq`` records ending in ``hash`` at ``ts``", signed with the fleet's
audit key. The hash chain already shows any edit *inside* the records; a signed checkpoint also shows a
rewrite of the whole chain (someone who recomputes every hash from a forged record onwards cannot sign
the old checkpoints again), and pins the head so a cut tail is visible even if the head row was reset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from raygent.core.clock import Clock
from raygent.core.store.base import GENESIS_HASH, AuditQuery, Store
from raygent.governance.signing import Signer
from raygent.governance.state import GovernanceConn, GovernanceState

__all__ = ["Checkpoint", "CheckpointCheck", "Checkpointer"]

_PAGE = 5000


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    ts: float
    key_id: str
    signature: str

    def signed_payload(self) -> dict[str, object]:
        return {"seq": self.seq, "hash": self.hash, "ts": self.ts, "key_id": self.key_id}

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CheckpointCheck:
    seq: int
    ok: bool
    reason: str = ""


class Checkpointer:
    """Writes and checks signed checkpoints of ``store``'s audit chain."""

    def __init__(self, store: Store, db: GovernanceState, *, signer: Signer, clock: Clock) -> None:
        self._store = store
        self._db = db
        self._signer = signer
        self._clock = clock

    async def all(self) -> list[Checkpoint]:
        rows = await self._db.run(
            lambda c: c.execute(
                "SELECT seq, hash, ts, key_id, signature FROM checkpoints ORDER BY seq"
            ).fetchall(),
            write=False,
        )
        return [Checkpoint(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def _head(self, after_seq: int) -> tuple[int, str]:
        seq, digest = after_seq, GENESIS_HASH
        while True:
            page = await self._store.query_audit(AuditQuery(after_seq=seq, limit=_PAGE))
            if not page:
                return seq, digest
            seq, digest = page[-1].seq, page[-1].hash

    async def checkpoint(self) -> Checkpoint:
        """Sign the current head (a no-op returning the last checkpoint when nothing was appended)."""
        existing = await self.all()
        last = existing[-1] if existing else None
        seq, digest = await self._head(last.seq if last else 0)
        if last is not None and seq == last.seq:
            return last
        unsigned = Checkpoint(seq, digest, self._clock.now(), self._signer.key_id, "")
        cp = Checkpoint(
            seq, digest, unsigned.ts, unsigned.key_id, self._signer.sign(unsigned.signed_payload())
        )

        def write(conn: GovernanceConn) -> None:
            conn.execute(
                "INSERT INTO checkpoints (seq, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (cp.seq, cp.hash, cp.ts, cp.key_id, cp.signature),
            )

        await self._db.run(write, write=True)
        return cp

    async def checkpoint_if_due(self, every_records: int) -> Checkpoint | None:
        """Sign the head when at least ``every_records`` records were appended since the last checkpoint."""
        if every_records <= 0:
            return None
        existing = await self.all()
        last_seq = existing[-1].seq if existing else 0
        seq, _ = await self._head(last_seq)
        return await self.checkpoint() if seq - last_seq >= every_records else None

    async def verify(self) -> list[CheckpointCheck]:
        """Each checkpoint's signature, and that the stored record at its seq still has its hash."""
        checks: list[CheckpointCheck] = []
        for cp in await self.all():
            if not self._signer.verify(cp.signed_payload(), cp.signature):
                checks.append(CheckpointCheck(cp.seq, False, "signature does not verify"))
                continue
            found = await self._store.query_audit(AuditQuery(after_seq=cp.seq - 1, limit=1))
            if not found or found[0].seq != cp.seq:
                checks.append(CheckpointCheck(cp.seq, False, f"record {cp.seq} is missing"))
            elif found[0].hash != cp.hash:
                checks.append(
                    CheckpointCheck(cp.seq, False, f"record {cp.seq} no longer has the signed hash")
                )
            else:
                checks.append(CheckpointCheck(cp.seq, True))
        return checks
