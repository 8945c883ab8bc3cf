"""Two ingress replicas (two API services, as on two machines) on one fleet whose store is Redis:
idempotency keys and async runs are shared through Redis, not per machine."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from serving_helpers import Served, serve_in_process, tiny_fleet

from raygent.core.config import Fleet, RateLimitSpec, StoreSpec
from raygent.core.errors import RateLimitedError
from raygent.core.store.redis_ledgers import RedisAsyncRunLedger, RedisIdempotencyLedger
from raygent.core.store.redis_server import RedisServer
from raygent.serve.ratelimit import SharedRateLimiter
from raygent.serve.serving import open_ledgers, open_rate_limits

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


# ----- rate limits shared through Redis -------------------------------------------------------------


def shared_limiter(url: str, namespace: str, **spec: Any) -> SharedRateLimiter:
    return SharedRateLimiter({"a": RateLimitSpec.model_validate(spec)}, url=url, namespace=namespace)


async def test_two_replicas_take_from_one_bucket(redis_url: str) -> None:
    namespace = f"rl{time.monotonic_ns()}"
    one = shared_limiter(redis_url, namespace, requests_per_s=0.01, burst=2)
    two = shared_limiter(redis_url, namespace, requests_per_s=0.01, burst=2)
    try:
        await one.check("a", caller="alice")
        await two.check("a", caller="alice")  # the second of the burst, on the other replica
        for replica in (one, two):
            with pytest.raises(RateLimitedError) as refused:
                await replica.check("a", caller="alice")
            assert refused.value.status == 429 and refused.value.retry_after_s >= 90  # 1 token / 0.01 per s
        await two.check("a", caller="bob")  # bob's own bucket
        await one.check("unlimited", caller="alice")  # an agent without a limit is never refused
        assert (one.refused["a"], two.refused["a"]) == (1, 1)
    finally:
        await one.close()
        await two.close()


async def test_a_shared_bucket_refills_at_the_rate_and_expires_once_full(redis_url: str) -> None:
    limiter = shared_limiter(redis_url, f"rl{time.monotonic_ns()}", requests_per_s=20, burst=1)
    try:
        await limiter.check("a", caller="alice")
        with pytest.raises(RateLimitedError):
            await limiter.check("a", caller="alice")
        await asyncio.sleep(0.2)  # 4 tokens' worth of time, capped at the burst of 1
        await limiter.check("a", caller="alice")
        with pytest.raises(RateLimitedError):
            await limiter.check("a", caller="alice")
        key = limiter.key("a", caller="alice")
        ttl_ms = await limiter._r.pttl(key)
        assert 0 < ttl_ms <= 1 / 20 * 1000 + 1000  # forgotten once it would be full again
    finally:
        await limiter.close()


async def test_an_unreachable_redis_fails_open_and_is_counted() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    limiter = SharedRateLimiter(
        {"a": RateLimitSpec(requests_per_s=0.01, burst=1)},
        url=f"redis://127.0.0.1:{port}/0",
        namespace="rl",
        op_timeout_s=0.5,
    )
    try:
        for _ in range(3):  # far over the limit: not refused, because the limit cannot be checked
            await limiter.check("a", caller="alice")
        assert limiter.failed_open == 3 and limiter.stats()["a"]["failed_open"] == 3
    finally:
        await limiter.close()


async def test_the_limit_holds_across_ingress_replicas_over_http(
    tmp_path: Path, redis_url: str, tracer_provider: TracerProvider
) -> None:
    fleet = redis_fleet(tmp_path, redis_url, rate_limit={"requests_per_s": 0.01, "burst": 2})
    assert isinstance(open_rate_limits(fleet), SharedRateLimiter)
    async with (
        serve_in_process(fleet, tracer_provider) as one,
        serve_in_process(on_another_machine(fleet, tmp_path), tracer_provider) as two,
    ):
        first = await one.client.post(RUNS, json={"input": "hi"})
        second = await two.client.post(RUNS, json={"input": "hi"})
        assert (first.status_code, second.status_code) == (200, 200)
        refused = [await replica.client.post(RUNS, json={"input": "hi"}) for replica in (one, two)]
        assert [r.status_code for r in refused] == [429, 429]
        assert all(r.headers["content-type"] == "application/problem+json" for r in refused)
        stats = (await two.client.get("/v1/serving/stats")).json()["rate_limits"]["a"]
    assert stats["shared"] == "redis" and stats["refused"] == 1
