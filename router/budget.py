"""The budget interceptor: reserve before a model call, commit what it cost, refund when it failed.

It sits in the model-call chain inside audit (so a refusal is audited as an ``error`` record with
``error_type: budget-exceeded``) and outside the router. The reservation is the call's worst case:
the prompt estimate with a safety margin plus the output cap the router enforces
(``budgets.expected_output_tokens`` becomes every request's ``max_tokens``), priced at the dearest
backend. So what a call can spend is covered before it starts, and concurrent calls can never
overspend a scope together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from raygent.core.budget import BudgetLedger, Limit
from raygent.core.interceptors import CallContext, ModelCallInput, ModelCallOutput, ModelInterceptor
from raygent.core.routing import BudgetLimitSpec, BudgetsSpec
from raygent.router.router import RouteSpec
from raygent.router.tokens import count_request_tokens

__all__ = ["BudgetModelInterceptor", "limits_for", "tenant_of"]

# Prompt estimates are within a few percent of real tokenizers; reserve a margin on top.
_PROMPT_MARGIN = 1.25
_PROMPT_SLACK_TOKENS = 16


def tenant_of(identity: str) -> str:
    """The tenant of an agent identity: the part after ``@`` (``svc-support@acme`` → ``acme``)."""
    _, at, domain = identity.rpartition("@")
    return domain if at and domain else "default"


def limits_for(spec: BudgetsSpec, ctx: CallContext) -> list[Limit]:
    """The scopes a call spends from, with their caps (scopes without a cap are left out)."""
    out: list[Limit] = []

    def add(scope: str, limit: BudgetLimitSpec | None) -> None:
        if limit is not None and (limit.max_tokens is not None or limit.max_usd is not None):
            out.append(Limit(scope, max_tokens=limit.max_tokens, max_usd=limit.max_usd))

    add(f"session:{ctx.session_id}", spec.per_session)
    add(f"agent:{ctx.agent}", spec.agents.get(ctx.agent, spec.per_agent))
    add(f"tenant:{tenant_of(ctx.identity)}", spec.per_tenant)
    return out


class BudgetModelInterceptor(ModelInterceptor):
    """Reserve → call → commit (or refund) on the budget ledger.

    Args:
        ledger: Where budgets are kept (SQLite or Redis).
        spec: The fleet's budgets.
        backends: Every backend's prices; the reservation uses the dearest.
    """

    def __init__(self, ledger: BudgetLedger, spec: BudgetsSpec, backends: Iterable[RouteSpec]) -> None:
        self._ledger = ledger
        self._spec = spec
        specs = list(backends)
        self._max_in = max((s.cost_per_1k_input_usd for s in specs), default=0.0)
        self._max_out = max((s.cost_per_1k_output_usd for s in specs), default=0.0)

    def reservation(self, inp: ModelCallInput) -> tuple[int, float]:
        """Worst-case tokens and USD of ``inp``."""
        prompt = int(count_request_tokens(inp.messages, inp.tools) * _PROMPT_MARGIN) + _PROMPT_SLACK_TOKENS
        output = self._spec.expected_output_tokens
        usd = (prompt * self._max_in + output * self._max_out) / 1000.0
        return prompt + output, usd

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        limits = limits_for(self._spec, inp.ctx)
        if not limits:
            return await self.next.call_model(inp)
        tokens, usd = self.reservation(inp)
        reservation_id = f"{inp.ctx.run_id}:{inp.ctx.step}:{uuid.uuid4().hex}"
        await self._ledger.reserve(reservation_id, limits, tokens=tokens, usd=usd)
        try:
            out = await self.next.call_model(inp)
        except BaseException:
            await self._ledger.refund(reservation_id)
            raise
        await self._ledger.commit(reservation_id, tokens=out.usage.total_tokens, usd=out.cost_usd)
        return out
