"""A store whose audit trail lives elsewhere: sessions, runs and the rest in the fleet's store, the
audit chain in PostgreSQL (``store.audit_dsn``), where many machines append to one trail."""

from __future__ import annotations

from typing import Any

from raygent.core.store.base import AuditDraft, AuditQuery, AuditRecord, VerifyResult
from raygent.core.store.postgres_audit import PostgresAuditLog

__all__ = ["AuditSplitStore"]


class AuditSplitStore:
    """Audit methods go to ``audit``; every other Store method to ``inner``."""

    def __init__(self, inner: Any, audit: PostgresAuditLog) -> None:
        self._inner = inner
        self._audit = audit

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not defined here: everything but the audit trail.
        return getattr(self._inner, name)

    async def append_audit(self, drafts: list[AuditDraft]) -> list[AuditRecord]:
        return await self._audit.append_audit(drafts)

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        return await self._audit.query_audit(query)

    async def verify_audit(self) -> VerifyResult:
        return await self._audit.verify_audit()

    async def close(self) -> None:
        try:
            await self._inner.close()
        finally:
            await self._audit.close()
