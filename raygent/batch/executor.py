"""Where batch items run: in this process, or on a pool of Ray actors spread over the cluster's nodes.

Why actors that run the agent code in-process rather than calls to the fleet's Serve deployments:

* **Batch priority.** Interactive traffic keeps the Serve replicas and their bounded queues; a batch
  brings its own capacity (``workers`` actors, each asking for ``worker_num_cpus`` and optional custom
  resources such as ``agents: 1``), so it never fills the queues interactive requests are admitted to,
  and the autoscaler adds nodes for it like for any other demand.
* **Its own tier.** Every agent of a batch runs at the batch's tier (cheap by default) without changing
  the deployed fleet.
* **No deployment needed.** A batch runs on a cluster where the fleet is not served.
* **Same governance.** :class:`~raygent.actors.inprocess.InProcessFleet` builds the same step loops and
  the same router and gateway interceptor chains (tracing, audit, checks), writing to the same store.

Node loss: an actor on a node that dies fails its in-flight calls with an actor error; they surface as
:class:`~raygent.batch.agents.WorkerLostError` and the runner runs the item again (same run id, so no
effect is repeated). Actors are restartable (``max_restarts=-1``), so Ray re-creates them on the nodes
that remain (or that the autoscaler adds).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Protocol

from raygent.batch.agents import ItemRunner
from raygent.batch.errors import WorkerLostError
from raygent.batch.items import BatchItem
from raygent.batch.manifest import BatchManifest
from raygent.batch.progress import ItemRecord
from raygent.core.clock import SystemClock

__all__ = ["Executor", "LocalExecutor", "RayExecutor"]


class Executor(Protocol):
    async def start(self) -> None: ...

    async def run(self, item: BatchItem, attempt: int) -> ItemRecord:
        """Run one item; raises WorkerLostError when the worker went away (the item may run again)."""
        ...

    async def close(self) -> None: ...


class LocalExecutor:
    """Every item in this process (tests, ``raygent batch run --local``, and the benchmark's baseline)."""

    def __init__(self, manifest: BatchManifest) -> None:
        self._manifest = manifest
        self._runner: ItemRunner | None = None

    async def start(self) -> None:
        self._runner = ItemRunner(self._manifest, clock=SystemClock())

    async def run(self, item: BatchItem, attempt: int) -> ItemRecord:
        assert self._runner is not None, "start() first"
        return await self._runner.run(item, attempt)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.aclose()


class BatchWorker:
    """The body of a batch worker actor: one :class:`ItemRunner` per actor process."""

    def __init__(self, manifest: BatchManifest) -> None:
        import ray

        self._runner = ItemRunner(
            manifest, clock=SystemClock(), node_id=ray.get_runtime_context().get_node_id()
        )

    async def run(self, item: BatchItem, attempt: int) -> ItemRecord:
        return await self._runner.run(item, attempt)

    def ready(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())


def _is_worker_loss(exc: BaseException) -> bool:
    from ray import exceptions as rex

    lost = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError)
    return isinstance(exc, lost) or type(exc).__name__ in ("ActorUnavailableError", "ActorDiedError")


class RayExecutor:
    """A pool of ``manifest.workers`` async actors, scheduled with ``SPREAD`` over the cluster's nodes.

    Each actor accepts its share of ``max_concurrency`` concurrent items; calls go to the actor with the
    fewest in flight. Must be used from a process connected to Ray (the batch job's driver).
    """

    def __init__(self, manifest: BatchManifest) -> None:
        self._manifest = manifest
        self._actors: list[Any] = []
        self._inflight: list[int] = []

    async def start(self) -> None:
        import ray

        m = self._manifest
        per_actor = max(1, math.ceil(m.max_concurrency / m.workers))
        cls = ray.remote(BatchWorker).options(  # type: ignore[attr-defined]
            num_cpus=m.worker_num_cpus,
            resources=dict(m.worker_resources),
            scheduling_strategy="SPREAD",
            max_concurrency=per_actor,
            max_restarts=-1,
            max_task_retries=0,  # the runner decides: it records attempts and gives up after a limit
        )
        self._actors = [cls.remote(m) for _ in range(m.workers)]
        self._inflight = [0] * len(self._actors)
        # Wait until every actor has built its fleet, so the first items do not all time out together.
        await asyncio.gather(*(actor.ready.remote() for actor in self._actors))

    async def run(self, item: BatchItem, attempt: int) -> ItemRecord:
        index = min(range(len(self._actors)), key=self._inflight.__getitem__)
        self._inflight[index] += 1
        try:
            record: ItemRecord = await self._actors[index].run.remote(item, attempt)
        except Exception as exc:
            if _is_worker_loss(exc):
                raise WorkerLostError(
                    f"line {item.line}: its worker was lost ({type(exc).__name__})"
                ) from None
            raise
        finally:
            self._inflight[index] -= 1
        return record

    async def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
