"""The audit hash chain as pure functions, shared by every store backend.

A backend only has to (1) read its head ``(seq, hash)`` and call :func:`seal` inside one write lock, and
(2) stream its records in ``seq`` order into :func:`verify_chain`. Nothing here touches I/O, so the
PostgreSQL backend reuses both unchanged.

Each record commits to its predecessor through ``prev_hash`` and to its own content through ``hash``
(see :func:`~raygent.core.store.base.record_hash`), so any edit, insertion, deletion or reordering breaks
the chain at the first record touched. Cutting the tail leaves a valid chain, which is why the verifier
also compares against the head the store keeps beside the records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from raygent.core.store.base import (
    AUDIT_KINDS,
    GENESIS_HASH,
    AuditDraft,
    AuditRecord,
    VerifyResult,
    canonical_json,
    record_hash,
    sha256_hex,
)

__all__ = ["GENESIS_HASH", "normalize_payload", "payload_digest", "seal", "verify_chain"]


def normalize_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload exactly as it reads back from storage: a canonical-JSON round trip.

    Sealed records carry this form so what ``append_audit`` returns equals what ``query_audit`` reads
    later (tuples become lists, non-JSON values their ``str``), and a caller mutating its dict afterwards
    cannot change a sealed record.

    Raises:
        TypeError: ``payload`` is not a dict.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"audit payload must be a dict, got {type(payload).__name__}")
    result: dict[str, Any] = json.loads(canonical_json(payload))
    return result


def payload_digest(payload: dict[str, Any]) -> str:
    """``payload_sha256`` of a payload: SHA-256 of its canonical JSON."""
    return sha256_hex(canonical_json(payload))


def seal(drafts: Sequence[AuditDraft], prev_seq: int, prev_hash: str) -> list[AuditRecord]:
    """Turn drafts into chained records that follow the head ``(prev_seq, prev_hash)``.

    Must run while the caller holds the chain's write lock: the head it was given has to still be the
    head when the records are stored, or the chain forks.

    Args:
        drafts: Records to append, in order.
        prev_seq: ``seq`` of the current head (0 for an empty chain).
        prev_hash: ``hash`` of the current head (:data:`GENESIS_HASH` for an empty chain).

    Returns:
        One record per draft, with ``seq`` ``prev_seq + 1`` onwards.

    Raises:
        ValueError: A draft's kind is not one of ``AUDIT_KINDS``.
        TypeError: A draft's payload is not a dict.
    """
    records: list[AuditRecord] = []
    seq, link = prev_seq, prev_hash
    for draft in drafts:
        if draft.kind not in AUDIT_KINDS:
            raise ValueError(f"unknown audit kind {draft.kind!r}; expected one of {', '.join(AUDIT_KINDS)}")
        seq += 1
        payload = normalize_payload(draft.payload)
        digest = payload_digest(payload)
        ts = float(draft.ts)
        chained = record_hash(
            seq=seq,
            prev_hash=link,
            ts=ts,
            trace_id=draft.trace_id,
            run_id=draft.run_id,
            session_id=draft.session_id,
            agent=draft.agent,
            identity=draft.identity,
            kind=draft.kind,
            payload_sha256=digest,
        )
        records.append(
            AuditRecord(
                seq=seq,
                prev_hash=link,
                hash=chained,
                ts=ts,
                trace_id=draft.trace_id,
                run_id=draft.run_id,
                session_id=draft.session_id,
                agent=draft.agent,
                identity=draft.identity,
                kind=draft.kind,
                payload=payload,
                payload_sha256=digest,
            )
        )
        link = chained
    return records


def _record_problem(record: AuditRecord, prev_seq: int, prev_hash: str) -> tuple[int, str] | None:
    """The first thing wrong with one record given its predecessor, as ``(bad_seq, reason)``."""
    if record.seq != prev_seq + 1:
        # Name the seq the chain needed next: after a deletion that is the missing record, after a
        # reorder the first position holding the wrong record.
        kind = "gap" if record.seq > prev_seq + 1 else "reorder or duplicate"
        return prev_seq + 1, f"seq {kind}: expected {prev_seq + 1} after {prev_seq}, found {record.seq}"
    if record.prev_hash != prev_hash:
        return record.seq, f"prev_hash does not match the hash of record {prev_seq}"
    if payload_digest(record.payload) != record.payload_sha256:
        return record.seq, "payload does not match payload_sha256"
    expected = record_hash(
        seq=record.seq,
        prev_hash=record.prev_hash,
        ts=record.ts,
        trace_id=record.trace_id,
        run_id=record.run_id,
        session_id=record.session_id,
        agent=record.agent,
        identity=record.identity,
        kind=record.kind,
        payload_sha256=record.payload_sha256,
    )
    if expected != record.hash:
        return record.seq, "hash does not match the record's content"
    return None


def verify_chain(
    records: Iterable[AuditRecord],
    *,
    expected_head: tuple[int, str] | None,
    start: tuple[int, str] = (0, GENESIS_HASH),
) -> VerifyResult:
    """Walk records in the order given (which must be ``seq`` order) and name the first bad one.

    Stops at the first problem, so ``records`` may be a lazy cursor over millions of rows.

    Args:
        records: The chain, ascending by ``seq``.
        expected_head: ``(seq, hash)`` the store says the chain ends with; catches a cut tail, which
            leaves an otherwise valid chain. ``None`` skips that check.
        start: ``(seq, hash)`` the first record follows; the default is an empty chain's genesis. A
            backend that verifies from a signed checkpoint passes the checkpoint here.

    Returns:
        ``ok`` with ``records_checked`` the number of records walked, or ``ok=False`` with
        ``first_bad_seq`` the lowest seq that is missing, altered or mislinked, ``reason`` saying
        which, and ``records_checked`` the number of good records before it.
    """
    prev_seq, prev_hash = start
    checked = 0
    for record in records:
        problem = _record_problem(record, prev_seq, prev_hash)
        if problem is not None:
            bad_seq, reason = problem
            return VerifyResult(ok=False, records_checked=checked, first_bad_seq=bad_seq, reason=reason)
        prev_seq, prev_hash = record.seq, record.hash
        checked += 1
    if expected_head is not None:
        head_seq, head_hash = expected_head
        if prev_seq < head_seq:
            reason = f"chain truncated: ends at seq {prev_seq} but the head is seq {head_seq}"
            return VerifyResult(ok=False, records_checked=checked, first_bad_seq=prev_seq + 1, reason=reason)
        if prev_seq > head_seq:
            reason = f"records past the head: chain ends at seq {prev_seq} but the head is seq {head_seq}"
            return VerifyResult(ok=False, records_checked=checked, first_bad_seq=head_seq + 1, reason=reason)
        if prev_hash != head_hash:
            reason = f"last record's hash differs from the head's hash at seq {head_seq}"
            return VerifyResult(ok=False, records_checked=checked, first_bad_seq=head_seq, reason=reason)
    return VerifyResult(ok=True, records_checked=checked)
