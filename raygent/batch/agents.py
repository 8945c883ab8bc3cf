"""Running one batch item with the fleet's own agent code (the same loops, router and gateway chains).

A batch runs every agent at one tier (``cheap`` by default) by deriving a fleet whose agents carry that
tier; the router then picks that tier's models as it would for any run. Each item gets a deterministic
run id (:func:`~raygent.batch.manifest.item_run_id`) and its own session; the gateway names delegated runs
after their caller's run and call. So a re-run after a crash repeats every run id and every tool call's
idempotency key: a tool that honours its key (the example's refund) applies its effect once.
"""

from __future__ import annotations

from typing import Any, cast

from raygent.actors.inprocess import InProcessFleet
from raygent.batch.errors import WorkerLostError
from raygent.batch.items import BatchItem
from raygent.batch.manifest import BatchManifest, item_run_id
from raygent.batch.progress import ItemRecord
from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import ConfigError, ConflictError, RaygentError
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store import open_store
from raygent.core.store.base import RunRecord, Store
from raygent.telemetry.runtime import fleet_tracer

__all__ = ["ItemRunStore", "ItemRunner", "WorkerLostError", "premium_cost_usd", "with_tier"]

# A run in one of these states is over: its item needs no second run.
_SETTLED = frozenset({"completed", "failed", "timed_out", "cancelled", "needs_approval", "waiting"})


def with_tier(fleet: Fleet, tier: str) -> Fleet:
    """``fleet`` with every agent at ``tier`` (``agent`` keeps each agent's own tier).

    Raises:
        ConfigError: No model of the fleet has that tier.
    """
    if tier == "agent":
        return fleet
    if not any(m.tier == tier for m in fleet.models.values()):
        tiers = sorted({m.tier for m in fleet.models.values()})
        raise ConfigError(f"no model of fleet {fleet.name!r} has tier {tier!r} (tiers: {', '.join(tiers)})")
    agents = {name: spec.model_copy(update={"tier": tier}) for name, spec in fleet.agents.items()}
    return fleet.model_copy(update={"agents": agents})


def premium_cost_usd(fleet: Fleet, input_tokens: int, output_tokens: int) -> float:
    """What the same tokens cost on the model a premium-tier run would use first (the fleet's first
    premium model; the most expensive one if none is premium). An estimate: a premium model would not
    produce exactly the same number of tokens."""
    models = list(fleet.models.values())
    premium = [m for m in models if m.tier == "premium"]
    spec = premium[0] if premium else max(models, key=lambda m: m.cost_per_1k_output_usd)
    return (input_tokens * spec.cost_per_1k_input_usd + output_tokens * spec.cost_per_1k_output_usd) / 1000


class ItemRunStore:
    """The fleet's store, except that a batch item's run may be created again under the same id.

    A batch item re-runs after its worker died or the job was killed, under the same run id, so that
    every tool call gets the same idempotency key (and delegated runs, named after their caller's run
    and call, the same ids). The store refuses a second ``create_run`` for an id; for runs of this batch
    the earlier, interrupted attempt's record is replaced instead. Only one attempt of an item runs at a
    time: the runner starts the next one after the previous worker is gone.

    Args:
        store: The fleet's store; every other method is passed through.
        batch_id: Only runs whose id starts with it are taken over.
    """

    def __init__(self, store: Store, batch_id: str) -> None:
        self._store = store
        self._prefix = batch_id + "."

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def create_run(self, run: RunRecord) -> None:
        try:
            await self._store.create_run(run)
        except ConflictError:
            if not run.run_id.startswith(self._prefix):
                raise
            stored = await self._store.get_run(run.run_id)
            if stored is not None:
                run.created_at = stored.created_at
            await self._store.save_run(run)


def _item_status(out: RunOutput) -> str:
    return out.status if out.status in ("completed", "timed_out") else "failed"


def _output_of(record: RunRecord) -> RunOutput:
    return RunOutput(
        run_id=record.run_id,
        agent=record.agent,
        session_id=record.session_id,
        status=record.status,
        output=record.output,
        steps=record.steps,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cost_usd=record.cost_usd,
        trace_id=record.trace_id,
        error=record.error,
    )


class ItemRunner:
    """Runs items of one batch in this process. One per worker process (never module-global).

    Args:
        manifest: The batch.
        clock: Time source.
        node_id: The Ray node this runs on, recorded with each item (None outside Ray).
    """

    def __init__(self, manifest: BatchManifest, *, clock: Clock, node_id: str | None = None) -> None:
        fleet = manifest.load_fleet()
        if manifest.agent not in fleet.agents:
            raise ConfigError(f"there is no agent {manifest.agent!r} in fleet {fleet.name!r}")
        self._fleet = with_tier(fleet, manifest.tier)
        self._manifest = manifest
        self._clock = clock
        self._node_id = node_id
        self._store = open_store(self._fleet)
        self._provider, tracer = fleet_tracer(self._fleet, "batch")
        store = cast(Store, ItemRunStore(self._store, manifest.batch_id))
        self._agents = InProcessFleet(self._fleet, store=store, tracer=tracer, clock=clock)
        self._spec = self._fleet.agents[manifest.agent]

    async def run(self, item: BatchItem, attempt: int) -> ItemRecord:
        """Run one item to an :class:`ItemRecord`; a run-level failure is a record, not an exception.

        Raises:
            WorkerLostError: A retryable infrastructure error (the store was busy); run it again.
        """
        run_id = item_run_id(self._manifest.batch_id, item.line)
        stored = await self._store.get_run(run_id)
        if stored is not None and stored.status in _SETTLED:
            # An earlier attempt finished but was not recorded (the job died in between): no second run.
            return self._record(item, attempt, _output_of(stored))
        req = RunInput(
            run_id=run_id,
            agent=self._manifest.agent,
            input=item.input,
            session_id=run_id,
            deadline_ts=self._clock.now() + self._spec.deadline_s,
            requester=self._manifest.requester,
            end_user=self._manifest.end_user,
        )
        try:
            out = await self._agents.invoke(req)
        except RaygentError as exc:
            if exc.retryable:
                raise WorkerLostError(f"line {item.line}: {exc.detail}", retryable=True) from None
            return self._failed(item, run_id, attempt, exc.to_problem())
        return self._record(item, attempt, out)

    def _record(self, item: BatchItem, attempt: int, out: RunOutput) -> ItemRecord:
        backends = [s["backend"] for s in out.steps if s.get("kind") == "model"]
        return ItemRecord(
            line=item.line,
            custom_id=item.custom_id,
            status=_item_status(out),  # type: ignore[arg-type]
            finished_at=self._clock.now(),
            run_id=out.run_id,
            output=out.output,
            error=out.error,
            input_tokens=out.input_tokens,
            output_tokens=out.output_tokens,
            cost_usd=out.cost_usd,
            premium_cost_usd=premium_cost_usd(self._fleet, out.input_tokens, out.output_tokens),
            backend=backends[-1] if backends else None,
            node_id=self._node_id,
            attempts=attempt,
        )

    def _failed(self, item: BatchItem, run_id: str, attempt: int, problem: dict[str, object]) -> ItemRecord:
        return ItemRecord(
            line=item.line,
            custom_id=item.custom_id,
            status="failed",
            finished_at=self._clock.now(),
            run_id=run_id,
            error=dict(problem),
            node_id=self._node_id,
            attempts=attempt,
        )

    async def aclose(self) -> None:
        await self._agents.aclose()
        await self._store.close()
        self._provider.shutdown()
