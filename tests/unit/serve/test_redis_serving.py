"""Two ingress replicas (two API services, as on two machines) on one fleet whose store is Redis:
idempotency keys and async runs are shared through Redis, not per machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from serving_helpers import Served, serve_in_process, tiny_fleet

from raygent.core.config import Fleet, StoreSpec
from raygent.core.store.redis_ledgers import RedisAsyncRunLedger, RedisIdempotencyLedger
from raygent.core.store.redis_server import RedisServer
from raygent.serve.serving import open_ledgers

RUNS = "/v1/agents/a/runs"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis-serving")).start()
    try:
        yield server.url
    finally:
        server.stop()


def redis_fleet(tmp_path: Path, url: str, **agent: Any) -> Fleet:
    fleet = tiny_fleet(tmp_path, latency_ms=100, **agent)
    store = StoreSpec(kind="redis", url=url, tenant=f"t{time.monotonic_ns()}")  # a fresh namespace
    return fleet.model_copy(update={"store": store})


def on_another_machine(fleet: Fleet, tmp_path: Path) -> Fleet:
    """The same fleet with its own state directory, as a second machine would have."""
    (tmp_path / "machine-2").mkdir(exist_ok=True)
    return fleet.model_copy(update={"state_dir": str(tmp_path / "machine-2")})


async def wait_status(served: Served, run_id: str, want: set[str]) -> dict[str, Any]:
    for _ in range(200):
        body: dict[str, Any] = (await served.client.get(f"/v1/runs/{run_id}")).json()
        if body.get("status") in want:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {want}: {body}")


def test_a_redis_fleet_keeps_its_ledgers_in_redis(tmp_path: Path, redis_url: str) -> None:
    idem, runs = open_ledgers(redis_fleet(tmp_path, redis_url))
    assert isinstance(idem, RedisIdempotencyLedger) and isinstance(runs, RedisAsyncRunLedger)


async def test_concurrent_duplicates_on_two_replicas_yield_one_run(
    tmp_path: Path, redis_url: str, tracer_provider: TracerProvider
) -> None:
    fleet = redis_fleet(tmp_path, redis_url)
    async with (
        serve_in_process(fleet, tracer_provider) as one,
        serve_in_process(on_another_machine(fleet, tmp_path), tracer_provider) as two,
    ):
        headers = {"Idempotency-Key": '"refund-1042"'}
        sends = [
            (one if n % 2 else two).client.post(RUNS, json={"input": "hi"}, headers=headers) for n in range(8)
        ]
        answers = await asyncio.gather(*sends)
        done = [a for a in answers if a.status_code == 200]
        # Duplicates that arrive while the first is running wait for it (or are told it is in use).
        assert done and all(a.status_code in (200, 409) for a in answers), [a.status_code for a in answers]
        assert len({a.json()["run_id"] for a in done}) == 1
        other = await two.client.post(RUNS, json={"input": "something else"}, headers=headers)
        assert other.status_code == 422  # same key, other body: on either replica


async def test_an_async_run_accepted_by_one_replica_is_cancelled_through_the_other(
    tmp_path: Path, redis_url: str, tracer_provider: TracerProvider
) -> None:
    fleet = redis_fleet(tmp_path, redis_url, batch_max_inflight=0)  # batch never gets a slot: queued
    async with (
        serve_in_process(fleet, tracer_provider) as one,
        serve_in_process(on_another_machine(fleet, tmp_path), tracer_provider) as two,
    ):
        accepted = await one.client.post(RUNS, json={"input": "hi", "mode": "async"})
        assert accepted.status_code == 202
        run_id = accepted.json()["run_id"]
        assert (await two.client.get(f"/v1/runs/{run_id}")).json()["status"] == "queued"
        assert (await two.client.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
        stored = await wait_status(one, run_id, {"cancelled"})
        assert stored["steps"] == []  # it never started
