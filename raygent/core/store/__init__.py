"""Durable state behind one async interface: sessions, runs and the hash-chained audit trail.

:func:`open_store` opens the backend a fleet file names; today that is the embedded SQLite store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raygent.core.store.base import (
    AUDIT_KINDS,
    GENESIS_HASH,
    RUN_STATES,
    AuditDraft,
    AuditKind,
    AuditQuery,
    AuditRecord,
    RunRecord,
    RunState,
    SessionContext,
    Store,
    VerifyResult,
    canonical_json,
    record_hash,
    sha256_hex,
)
from raygent.core.store.chain import seal, verify_chain
from raygent.core.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    # Only for the annotation: keeps pydantic out of processes that import the store alone.
    from raygent.core.config import Fleet

__all__ = [
    "AUDIT_KINDS",
    "GENESIS_HASH",
    "RUN_STATES",
    "AuditDraft",
    "AuditKind",
    "AuditQuery",
    "AuditRecord",
    "RunRecord",
    "RunState",
    "SQLiteStore",
    "SessionContext",
    "Store",
    "VerifyResult",
    "canonical_json",
    "open_store",
    "record_hash",
    "seal",
    "sha256_hex",
    "verify_chain",
]


def open_store(fleet: Fleet) -> Store:
    """Open the store a fleet file configures (``stores``), creating the file if needed.

    Args:
        fleet: The loaded fleet; a relative ``store.path`` is resolved against its state directory.

    Returns:
        A ready store; call ``close()`` when done.

    Raises:
        StoreError: The store cannot be opened.
    """
    spec = fleet.store
    # kind is Literal["sqlite"] today; a new backend adds its branch here.
    return SQLiteStore(fleet.state_path(spec.path), busy_timeout_s=spec.busy_timeout_s)
