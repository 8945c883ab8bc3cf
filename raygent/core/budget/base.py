"""The budget ledger contract: atomic reserve → commit/refund over several scopes at once.

A call reserves its worst case (prompt estimate plus the output cap, priced at the dearest backend) on
every scope it spends from (its session, its agent, its tenant) in one atomic step: either every scope
has room and all are reserved, or nothing changes and :class:`BudgetExceededError` names the scope that
is full. Afterwards the call commits what it really spent (the reservation is released and the actual
amount booked) or refunds it. Money is kept in integer nano-USD so concurrent updates never drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from raygent.core.errors import BudgetExceededError

__all__ = [
    "NANOS_PER_USD",
    "BudgetLedger",
    "Limit",
    "ScopeSpend",
    "budget_error",
    "to_nanos",
    "to_usd",
]

NANOS_PER_USD = 1_000_000_000


def to_nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


def to_usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


@dataclass(frozen=True, slots=True)
class Limit:
    """One scope's cap, e.g. ``Limit("session:s-1", max_tokens=20_000, max_usd=0.05)``."""

    scope: str
    max_tokens: int | None = None
    max_usd: float | None = None


@dataclass(frozen=True, slots=True)
class ScopeSpend:
    """What a scope has spent (committed) and holds reserved right now."""

    scope: str
    spent_tokens: int
    spent_usd: float
    reserved_tokens: int
    reserved_usd: float


def budget_error(scope: str, *, what: str, limit: float, used: float, wanted: float) -> BudgetExceededError:
    """The error for a reservation that does not fit; budgets do not refill, so it is not retryable."""
    unit = "tokens" if what == "tokens" else "USD"
    return BudgetExceededError(
        f"budget of {scope} exceeded: {used:g} {unit} spent or reserved of {limit:g}, "
        f"this call needs up to {wanted:g} more",
        retryable=False,
        extra={"scope": scope, "limit": limit, "used": used, "wanted": wanted, "unit": unit},
    )


class BudgetLedger(Protocol):
    """Budgets shared by every router replica. All methods are safe under any concurrency."""

    async def reserve(self, reservation_id: str, limits: list[Limit], *, tokens: int, usd: float) -> None:
        """Reserve on every scope of ``limits`` at once.

        Raises:
            BudgetExceededError: Some scope has no room; nothing was reserved.
            ConflictError: ``reservation_id`` is already open.
        """
        ...

    async def commit(self, reservation_id: str, *, tokens: int, usd: float) -> None:
        """Release the reservation and book what was really spent (unknown ids are a no-op)."""
        ...

    async def refund(self, reservation_id: str) -> None:
        """Release the reservation without spending (unknown ids are a no-op)."""
        ...

    async def spend(self, scope: str) -> ScopeSpend: ...

    async def close(self) -> None: ...
