"""Everything one ingress replica needs to serve runs under load, built from the fleet file."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.trace import Tracer

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.ids import new_id
from raygent.core.store.asyncruns import AsyncRunLedger, SQLiteAsyncRunLedger
from raygent.core.store.base import Store
from raygent.core.store.idempotency import IdempotencyLedger, SQLiteIdempotencyLedger
from raygent.core.store.redis import redis_namespace
from raygent.core.store.redis_ledgers import RedisAsyncRunLedger, RedisIdempotencyLedger
from raygent.core.store.sessionowners import RedisSessionOwners, SessionOwners, SQLiteSessionOwners
from raygent.serve.admission import AdmissionController
from raygent.serve.agents import AgentPort
from raygent.serve.callbacks import CallbackSender
from raygent.serve.cancels import CancelBroadcast
from raygent.serve.idempotency import IdempotencyGuard
from raygent.serve.inflight import InflightRuns
from raygent.serve.ratelimit import RateLimiter, SharedRateLimiter, agent_limits
from raygent.serve.runs import RunCoordinator
from raygent.serve.runs_async import AsyncRunner

__all__ = ["Serving", "build_serving", "open_ledgers", "open_rate_limits", "open_session_owners"]


@dataclass(frozen=True)
class Serving:
    admission: AdmissionController
    inflight: InflightRuns
    idempotency: IdempotencyGuard
    idempotency_ledger: IdempotencyLedger
    async_ledger: AsyncRunLedger
    runner: AsyncRunner
    coordinator: RunCoordinator
    sender: CallbackSender
    rates: RateLimiter | SharedRateLimiter
    session_owners: SessionOwners
    cancels: CancelBroadcast | None = None  # Serve replicas: cancels reach the replica driving a run

    async def aclose(self) -> None:
        if self.cancels is not None:
            await self.cancels.aclose()
        await self.runner.aclose()
        await self.sender.aclose()
        await self.idempotency_ledger.close()
        await self.async_ledger.close()
        await self.session_owners.close()
        await self.rates.close()


def _redis(fleet: Fleet) -> tuple[str, str] | None:
    """The fleet's Redis URL and key namespace when its store is Redis (the side ledgers live there too)."""
    spec = fleet.store
    if spec.kind == "redis" and spec.url is not None:
        return spec.url, redis_namespace(spec.tenant, fleet.name)
    return None


def open_ledgers(fleet: Fleet) -> tuple[IdempotencyLedger, AsyncRunLedger]:
    """The idempotency and async-run ledgers: in the fleet's Redis when its store is Redis (so every
    ingress replica on every machine shares them), else in ``server.ledger_path`` beside the store."""
    spec, redis = fleet.store, _redis(fleet)
    if redis is not None:
        url, namespace = redis
        return (
            RedisIdempotencyLedger(url, namespace=namespace, op_timeout_s=spec.op_timeout_s),
            RedisAsyncRunLedger(url, namespace=namespace, op_timeout_s=spec.op_timeout_s),
        )
    path = fleet.state_path(fleet.server.ledger_path)
    return (
        SQLiteIdempotencyLedger(path, busy_timeout_s=spec.busy_timeout_s),
        SQLiteAsyncRunLedger(path, busy_timeout_s=spec.busy_timeout_s),
    )


def open_session_owners(fleet: Fleet) -> SessionOwners:
    """Who each session belongs to (governed fleets): beside the ledgers, in Redis or SQLite."""
    spec, redis = fleet.store, _redis(fleet)
    if redis is not None:
        url, namespace = redis
        return RedisSessionOwners(
            url, namespace=namespace, ttl_s=spec.session_ttl_s, op_timeout_s=spec.op_timeout_s
        )
    return SQLiteSessionOwners(fleet.state_path(fleet.server.ledger_path), busy_timeout_s=spec.busy_timeout_s)


def open_rate_limits(fleet: Fleet) -> RateLimiter | SharedRateLimiter:
    """The rate-limit buckets: in the fleet's Redis when its store is Redis (one limit however many
    ingress replicas serve the fleet), else in this replica's memory, with its share of each limit
    (Serve spreads requests evenly over the ``server.replicas`` replicas)."""
    server, redis = fleet.server, _redis(fleet)
    if redis is not None:
        url, namespace = redis
        limits = agent_limits(fleet.agents, server.rate_limit)
        return SharedRateLimiter(limits, url=url, namespace=namespace, op_timeout_s=fleet.store.op_timeout_s)
    return RateLimiter.for_agents(fleet.agents, server.rate_limit, shares=server.replicas)


def build_serving(
    fleet: Fleet,
    *,
    store: Store,
    agents: AgentPort,
    clock: Clock,
    tracer: Tracer,
    sender: CallbackSender | None = None,
    lease_s: float = 30.0,
    sweep_interval_s: float = 2.0,
    share_cancels: bool = False,
) -> Serving:
    """The serving parts of one ingress replica; ledgers go to ``server.ledger_path`` in the state dir.

    ``share_cancels`` (Serve replicas, on Ray): cancel requests reach whichever replica drives the run.
    """
    server = fleet.server
    idempotency_ledger, async_ledger = open_ledgers(fleet)
    session_owners = open_session_owners(fleet)
    admission = AdmissionController.for_agents(
        fleet.agents, retry_after_s=server.retry_after_s, shares=server.replicas
    )
    rates = open_rate_limits(fleet)
    inflight = InflightRuns()
    cancels = CancelBroadcast(fleet.name, inflight) if share_cancels else None
    if cancels is not None:
        inflight.on_run = cancels.start
    idempotency = IdempotencyGuard(idempotency_ledger, ttl_s=server.idempotency_ttl_s, clock=clock)
    sender = sender or CallbackSender(server.callbacks, clock=clock)
    runner = AsyncRunner(
        fleet,
        ledger=async_ledger,
        store=store,
        agents=agents,
        admission=admission,
        inflight=inflight,
        sender=sender,
        clock=clock,
        owner=new_id("ingress"),
        lease_s=lease_s,
        sweep_interval_s=sweep_interval_s,
    )
    coordinator = RunCoordinator(
        fleet,
        store=store,
        agents=agents,
        admission=admission,
        idempotency=idempotency,
        inflight=inflight,
        runner=runner,
        clock=clock,
        tracer=tracer,
        rates=rates,
        sessions=session_owners,
    )
    return Serving(
        admission=admission,
        inflight=inflight,
        idempotency=idempotency,
        idempotency_ledger=idempotency_ledger,
        async_ledger=async_ledger,
        runner=runner,
        coordinator=coordinator,
        sender=sender,
        rates=rates,
        session_owners=session_owners,
        cancels=cancels,
    )
