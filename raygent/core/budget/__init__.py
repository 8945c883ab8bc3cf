"""Token and USD budgets per session, agent and tenant: an atomic reserve → commit/refund ledger.

:func:`open_ledger` opens the ledger a fleet's ``router.budgets.ledger`` names: SQLite (one host; a
transaction per operation) or Redis (a cluster; a Lua script per operation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raygent.core.budget.base import (
    NANOS_PER_USD,
    BudgetLedger,
    Limit,
    ScopeSpend,
    budget_error,
    to_nanos,
    to_usd,
)
from raygent.core.budget.sqlite import SQLiteLedger

if TYPE_CHECKING:
    from raygent.core.config import Fleet

__all__ = [
    "NANOS_PER_USD",
    "BudgetLedger",
    "Limit",
    "SQLiteLedger",
    "ScopeSpend",
    "budget_error",
    "open_ledger",
    "to_nanos",
    "to_usd",
]


def open_ledger(fleet: Fleet) -> BudgetLedger:
    """The budget ledger of ``fleet``; a relative SQLite path is resolved against its state directory."""
    spec = fleet.router.budgets.ledger
    if spec.kind == "redis":
        from raygent.core.budget.redis import RedisLedger  # redis client only where it is used

        return RedisLedger(
            spec.redis_url, key_prefix=spec.key_prefix, reservation_ttl_s=spec.reservation_ttl_s
        )
    return SQLiteLedger(fleet.state_path(spec.path), reservation_ttl_s=spec.reservation_ttl_s)
