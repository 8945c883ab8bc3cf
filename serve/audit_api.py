"""The audit trail over HTTP: ``GET /v1/audit`` (query, paged by sequence number) and
``GET /v1/audit/verify`` (recompute the hash chain), for SIEM pulls and auditors without shell access.

The same records and filters as ``raygent audit query`` (prompt → reasoning → tool call → backend
response → action, each with its hash-chain fields), read from the fleet's store, or from the
PostgreSQL audit database when ``store.audit_dsn`` is set. In a governed fleet the auth middleware asks
for ``audit:read`` (``audit:verify`` for the chain check) before these run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query

from raygent.core.store.base import AuditQuery

if TYPE_CHECKING:
    from raygent.serve.api import ApiService

__all__ = ["MAX_AUDIT_PAGE", "audit_router"]

MAX_AUDIT_PAGE = 1000


def audit_router(service: ApiService) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/audit", tags=["governance"], responses={422: {}})
    async def query_audit(
        run_id: str | None = Query(default=None, max_length=256),
        agent: str | None = Query(default=None, max_length=128),
        tool: str | None = Query(default=None, max_length=128),
        kind: str | None = Query(default=None, max_length=64),
        since: float | None = Query(default=None, ge=0, description="Epoch seconds."),
        after_seq: int = Query(default=0, ge=0, description="Records after this sequence number."),
        limit: int = Query(default=100, ge=1, le=MAX_AUDIT_PAGE),
    ) -> dict[str, Any]:
        """Matching records, oldest first; ``next_after_seq`` pages on (null on the last page)."""
        query = AuditQuery(
            run_id=run_id, agent=agent, tool=tool, kind=kind, since_ts=since, after_seq=after_seq, limit=limit
        )
        records = await service.store.query_audit(query)
        return {
            "records": [record.to_dict() for record in records],
            "next_after_seq": records[-1].seq if len(records) == limit else None,
        }

    @router.get("/v1/audit/verify", tags=["governance"])
    async def verify_audit() -> dict[str, Any]:
        """Recompute the whole chain; ``ok`` false names the first record that does not verify."""
        result = await service.store.verify_audit()
        return {
            "ok": result.ok,
            "records_checked": result.records_checked,
            "first_bad_seq": result.first_bad_seq,
            "reason": result.reason,
        }

    return router
