"""Run ownership on the HTTP API of a governed fleet: who may see or act on one run.

A run belongs to its requester (the token subject that started it) and to the end user it acts for.
Anyone else is answered ``404`` as if the run did not exist (a ``403`` would confirm a guessed id),
unless one of their roles grants the matching *all runs* permission:

* ``runs:read_all``: read every run (``GET /v1/runs/{id}``, the runs pages), e.g. an auditor or operator;
* ``runs:cancel_all``: cancel every run (``POST /v1/runs/{id}/cancel``), e.g. an operator.

These are separate actions rather than ``runs:read:*`` because a grant with fewer parts covers every
name below it (:func:`raygent.core.govconfig.permission_matches`): a plain ``runs:read`` grant would
cover ``runs:read:<anything>`` and so every run. The route permissions (``runs:read``, ``runs:cancel``)
are still checked first by the auth middleware; a role reading others' runs needs both.

Fleets without ``auth`` have no callers to tell apart: every run stays visible, as before. Runs stored
before runs recorded their requester have none: in a governed fleet only the all-runs permission sees
them (fail closed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from raygent.governance.auth import Principal
from raygent.serve.auth import governed_api, principal_of

if TYPE_CHECKING:
    from raygent.core.store.base import RunRecord
    from raygent.serve.api import ApiService

__all__ = ["CANCEL_ALL_RUNS", "READ_ALL_RUNS", "RunAccess"]

READ_ALL_RUNS = "runs:read_all"
CANCEL_ALL_RUNS = "runs:cancel_all"


class RunAccess:
    """Decides whether a caller may see or act on a run, from the run's requester and end user."""

    def __init__(self, service: ApiService) -> None:
        gov = governed_api(service)
        # Only a fleet that authenticates callers can tell them apart.
        self._rbac = gov.governance.rbac if gov is not None and gov.verifier is not None else None

    @property
    def enforced(self) -> bool:
        return self._rbac is not None

    def allows(
        self, principal: Principal | None, *, requester: str, end_user: str, all_runs: str = READ_ALL_RUNS
    ) -> bool:
        """Whether ``principal`` owns the run (requester or end user) or holds ``all_runs``."""
        if self._rbac is None:
            return True
        if principal is None:  # a governed route reached without a verified caller: fail closed
            return False
        if self._rbac.allows(principal.roles, all_runs):
            return True
        return principal.subject in {who for who in (requester, end_user) if who}

    def allows_request(
        self, request: Request, *, requester: str, end_user: str, all_runs: str = READ_ALL_RUNS
    ) -> bool:
        return self.allows(principal_of(request), requester=requester, end_user=end_user, all_runs=all_runs)

    def shows(self, principal: Principal | None, run: RunRecord) -> bool:
        """Whether ``principal`` may read ``run``."""
        return self.allows(principal, requester=run.requester, end_user=run.end_user)

    def owner_filter(self, principal: Principal | None) -> str | None:
        """The owner whose runs a listing for ``principal`` reads: None when it may read every run (or
        the fleet has no callers), else its subject ('' for no caller: matches nothing)."""
        if self.allows(principal, requester="", end_user=""):
            return None
        return principal.subject if principal else ""
