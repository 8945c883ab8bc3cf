"""Real legacy counterparts for the integration tests: the example's MQ responder, SOAP service and
green-screen program as processes, RabbitMQ and Redis as they run on the machine (unique names per test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from legacy_helpers import EXAMPLE, RABBIT_URL, REDIS_URL, LegacyFleet, Proc, free_port
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.config import Fleet
from raygent.core.store import SQLiteStore, open_store


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def start_responder(tmp_path: Path) -> Iterator[Any]:
    """Start the example's responder: ``start_responder(queue, transport=..., latency_ms=..., ...)``."""
    procs: list[Proc] = []

    def start(queue: str, *, transport: str = "rabbitmq", state: Path | None = None, **options: Any) -> Proc:
        args = [str(EXAMPLE / "responder.py"), "--transport", transport, "--queue", queue]
        args += ["--state-dir", str(state or tmp_path / "order-system")]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        proc = Proc(args, tmp_path / f"responder-{len(procs)}.log")
        procs.append(proc)
        proc.wait_for("ready")
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture(scope="module")
def soap_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    proc = Proc(
        [str(EXAMPLE / "soap_service.py"), "--port", str(port)], tmp_path_factory.mktemp("soap") / "soap.log"
    )
    proc.wait_for("ready")
    yield f"http://127.0.0.1:{port}/?wsdl"
    proc.stop()


@pytest.fixture
async def make_fleet(tracer_provider: TracerProvider) -> AsyncIterator[Any]:
    made: list[tuple[LegacyFleet, SQLiteStore]] = []

    def make(fleet: Fleet) -> LegacyFleet:
        store = open_store(fleet)
        assert isinstance(store, SQLiteStore)
        legacy = LegacyFleet(fleet, store=store, tracer_provider=tracer_provider)
        made.append((legacy, store))
        return legacy

    yield make
    for legacy, store in made:
        await legacy.aclose()
        await store.close()


@pytest.fixture
async def rabbit_queue(unique: str) -> AsyncIterator[str]:
    """A unique request queue name; the queue, its DLQ and reply queue are deleted afterwards."""
    import aio_pika

    name = f"test-osr-{unique}"
    yield name
    connection = await aio_pika.connect_robust(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        for queue in (name, f"{name}.dlq", f"{name}.reply"):
            await channel.queue_delete(queue)


@pytest.fixture
async def redis_stream(unique: str) -> AsyncIterator[str]:
    import redis.asyncio as aioredis

    name = f"test-osr-{unique}"
    yield name
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{name}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
