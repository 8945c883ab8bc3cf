"""Exactly-once side effects: the tool-effect ledger around every side-effecting tool call.

A call's id is deterministic, ``tool_call_id(run, step, index)``, and is also the idempotency key the
tool receives (``ToolContext.idempotency_key``). For a tool declared ``side_effect: true`` this
interceptor, innermost in the gateway's chain, records the call as *intended* before it runs and *done*
(with its result) after. When the same call arrives again (a resumed run, a retry after the gateway
died):

- *done*: the recorded result is returned and the tool does not run again;
- *intended* and recent (younger than the tool's ``timeout_s``): the first attempt may still be
  running, so this waits for it to settle;
- *intended* and older: the outcome is unknown (a crash between the effect and its record). An
  ``idempotent: true`` tool runs again with the same key, so a tool that honours the key applies the
  effect once; a non-idempotent one is not repeated: the ledger marks it ``needs_approval`` and the run
  stops with :class:`~raygent.governance.errors.EffectInDoubtError` for a person to decide.

A tool that timed out also leaves its outcome unknown, so its record stays *intended*.

:class:`EffectReplayInterceptor` sits near the outside of the chain and answers a call that is already
*done* before governance sees it again: the decision was made (and any spend counted) the first time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import ConflictError, DeadlineExceededError
from raygent.core.faults import FaultHook
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.core.messages import Usage
from raygent.core.store.base import Store, canonical_json, sha256_hex
from raygent.core.store.durable import EffectRecord
from raygent.governance.errors import EffectInDoubtError
from raygent.governance.gateway import error_result

__all__ = ["EffectLedgerInterceptor", "EffectReplayInterceptor", "call_fingerprint"]

_TIMEOUT_SLUG = "tool-timeout"
_UNSETTLED_SLUGS = frozenset({_TIMEOUT_SLUG, "tool-pending"})


def call_fingerprint(tool: str, arguments: dict[str, Any]) -> str:
    """What a replay must match: the tool's name and its arguments, canonically encoded."""
    return sha256_hex(canonical_json({"tool": tool, "arguments": arguments}))


def _outcome(out: ToolCallOutput) -> dict[str, Any]:
    return {
        "result": out.result,
        "is_error": out.is_error,
        "input_tokens": out.usage.input_tokens,
        "output_tokens": out.usage.output_tokens,
        "cost_usd": out.cost_usd,
    }


def _replay(inp: ToolCallInput, record: EffectRecord) -> ToolCallOutput:
    outcome = record.outcome or {}
    return ToolCallOutput(
        call_id=inp.call.id,
        name=inp.call.name,
        result=outcome.get("result"),
        is_error=bool(outcome.get("is_error", False)),
        latency_s=0.0,
        usage=Usage(int(outcome.get("input_tokens", 0)), int(outcome.get("output_tokens", 0))),
        cost_usd=float(outcome.get("cost_usd", 0.0)),
    )


class EffectReplayInterceptor(ToolInterceptor):
    """Returns the recorded result of a side-effecting call that is already done; passes the rest on.

    Args:
        fleet: Says which tools have side effects.
        store: Holds the ledger.
    """

    def __init__(self, fleet: Fleet, store: Store) -> None:
        self._fleet = fleet
        self._store = store

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        spec = self._fleet.tools.get(inp.call.name)
        if spec is not None and spec.side_effect:
            record = await self._store.get_effect(inp.call.id)
            fingerprint = call_fingerprint(inp.call.name, inp.call.arguments)
            if record is not None and record.status == "done" and record.fingerprint == fingerprint:
                return _replay(inp, record)
        return await self.next.call_tool(inp)


class EffectLedgerInterceptor(ToolInterceptor):
    """Records side-effecting calls before and after they run; replays, waits, retries or holds.

    Args:
        fleet: Says which tools have side effects, which are idempotent, and their timeouts.
        store: Holds the ledger.
        clock: Time source (wall clock: attempts are compared across processes).
        faults: Chaos tests only: kill points ``after_intent`` and ``after_effect``.
        poll_s: How often to look again while an earlier attempt may still be running.
    """

    def __init__(
        self,
        fleet: Fleet,
        store: Store,
        clock: Clock,
        *,
        faults: FaultHook | None = None,
        poll_s: float = 0.05,
    ) -> None:
        self._fleet = fleet
        self._store = store
        self._clock = clock
        self._faults = faults
        self._poll_s = poll_s

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        spec = self._fleet.tools.get(inp.call.name)
        if spec is None or not spec.side_effect:
            return await self.next.call_tool(inp)
        fingerprint = call_fingerprint(inp.call.name, inp.call.arguments)
        replayed = await self._claim(inp, fingerprint, timeout_s=spec.timeout_s, idempotent=spec.idempotent)
        if replayed is not None:
            return replayed
        self._fault("after_intent", inp)
        out = await self.next.call_tool(inp)
        self._fault("after_effect", inp)
        if out.is_error and isinstance(out.result, dict) and out.result.get("error_type") in _UNSETTLED_SLUGS:
            # The tool may still apply the effect after we stopped waiting (timed out, or still pending on a
            # slow backend): outcome unknown, stays intended.
            return out
        await self._store.settle_effect(
            inp.call.id, status="done", outcome=_outcome(out), reason="", now=self._clock.now()
        )
        return out

    async def _claim(
        self, inp: ToolCallInput, fingerprint: str, *, timeout_s: float, idempotent: bool
    ) -> ToolCallOutput | None:
        """Start a new attempt (returns None), or return the recorded outcome of an earlier one."""
        key, ctx = inp.call.id, inp.ctx
        while True:
            record = await self._store.get_effect(key)
            if record is not None:
                if record.fingerprint != fingerprint:
                    conflict = ConflictError(
                        f"tool call {key!r} was first made with other arguments; it is not repeated"
                    )
                    return ToolCallOutput(key, inp.call.name, error_result(conflict), is_error=True)
                if record.status == "done":
                    return _replay(inp, record)
                if record.status == "needs_approval":
                    raise self._in_doubt(inp, record)
                now = self._clock.now()
                if now < record.started_at + timeout_s:
                    # The earlier attempt may still be running (its caller died, it did not): wait for it.
                    if ctx.deadline_ts is not None and now >= ctx.deadline_ts:
                        raise DeadlineExceededError(
                            f"the run's deadline passed while an earlier attempt of {key!r} was running"
                        )
                    await asyncio.sleep(self._poll_s)
                    continue
                if not idempotent:
                    held = await self._store.settle_effect(
                        key,
                        status="needs_approval",
                        outcome=None,
                        reason=self._reason(inp, record),
                        now=now,
                    )
                    if held.status == "done":  # the earlier attempt settled just now
                        return _replay(inp, held)
                    raise self._in_doubt(inp, held)
            try:
                await self._store.begin_effect(
                    key,
                    run_id=ctx.run_id,
                    tool=inp.call.name,
                    fingerprint=fingerprint,
                    now=self._clock.now(),
                    expected_attempts=0 if record is None else record.attempts,
                )
            except ConflictError:
                continue  # another caller started an attempt between our read and write: look again
            return None

    @staticmethod
    def _reason(inp: ToolCallInput, record: EffectRecord) -> str:
        return (
            f"tool {inp.call.name!r} (call {record.key}) has side effects and is not idempotent; attempt "
            f"{record.attempts} started but its outcome was never recorded (a crash), so repeating it "
            "could apply the effect twice"
        )

    def _in_doubt(self, inp: ToolCallInput, record: EffectRecord) -> EffectInDoubtError:
        return EffectInDoubtError(
            record.reason or self._reason(inp, record),
            extra={"idempotency_key": record.key, "tool": inp.call.name, "attempts": record.attempts},
        )

    def _fault(self, point: str, inp: ToolCallInput) -> None:
        if self._faults is not None:
            self._faults.at(point, run_id=inp.ctx.run_id, step=inp.ctx.step)
