"""Durable state behind one async interface: sessions, runs and the hash-chained audit trail.

:func:`open_store` opens the backend a fleet file names: the embedded SQLite store (default) or Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

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
from raygent.core.store.durable import Checkpoint, CheckpointWrite, EffectRecord, EffectState
from raygent.core.store.redis import RedisStore, redis_namespace
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
    "Checkpoint",
    "CheckpointWrite",
    "EffectRecord",
    "EffectState",
    "RedisStore",
    "RunRecord",
    "RunState",
    "SQLiteStore",
    "SessionContext",
    "Store",
    "VerifyResult",
    "canonical_json",
    "open_store",
    "record_hash",
    "redis_namespace",
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
    if spec.audit_dsn is not None:
        from raygent.core.store.postgres_audit import PostgresAuditLog  # psycopg only where it is used
        from raygent.core.store.split import AuditSplitStore

        inner = open_store(fleet.model_copy(update={"store": spec.model_copy(update={"audit_dsn": None})}))
        return cast(Store, AuditSplitStore(inner, PostgresAuditLog(spec.audit_dsn, schema=spec.audit_schema)))
    if spec.kind == "redis" and spec.url is not None:  # StoreSpec refuses kind: redis without a url
        return RedisStore(
            spec.url,
            namespace=redis_namespace(spec.tenant, fleet.name),
            session_ttl_s=spec.session_ttl_s,
            op_timeout_s=spec.op_timeout_s,
        )
    return SQLiteStore(fleet.state_path(spec.path), busy_timeout_s=spec.busy_timeout_s)
