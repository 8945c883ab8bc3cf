"""The bank case over Redis Streams (the real Redis at 127.0.0.1:6379): with ``async_mode: park`` the
run parks as ``waiting`` and its reply resumes it, also when the whole fleet restarted in between; the
effect happens once. (The RabbitMQ version of the same cases: test_mq_async.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from legacy_helpers import REDIS_URL, inquiries, legacy_fleet, until

from raygent.core.config import Fleet, MqToolSpec, RedisStreamsTransportSpec
from raygent.integrations.mq.envelope import correlation_id_for
from raygent.integrations.mq.tool import MqToolExecutor

pytestmark = pytest.mark.integration


def redis_fleet(tmp_path: Path, stream: str) -> Fleet:
    fleet = legacy_fleet(tmp_path / "state", queue="unused")
    spec = fleet.tools["lookup_order_async"]
    assert isinstance(spec, MqToolSpec) and spec.timeout_s == 0.5 and spec.async_after_ms == 300
    transport = RedisStreamsTransportSpec(kind="redis_streams", url=REDIS_URL, request_stream=stream)
    parked = spec.model_copy(update={"transport": transport, "async_mode": "park"})
    return fleet.model_copy(update={"tools": {**fleet.tools, "lookup_order_async": parked}})


async def test_bank_case_parks_and_resumes_over_redis_streams(
    tmp_path: Path, redis_stream: str, start_responder: Any, make_fleet: Any
) -> None:
    state = tmp_path / "order-system"
    responder = start_responder(redis_stream, transport="redis_streams", state=state, latency_ms=800)
    legacy = make_fleet(redis_fleet(tmp_path, redis_stream))
    assert legacy.resumer is not None
    await legacy.resumer.start()

    parked = await legacy.run("orders-async", "Where is order 1004?")
    assert parked.status == "waiting", parked.error
    assert parked.error is not None and parked.error["type"].endswith("/tool-pending")
    cid = correlation_id_for(
        "lookup_order_async", next(s for s in parked.steps if s["kind"] == "tool")["call_id"]
    )
    store = legacy.loops["orders-async"]._store

    async def settled() -> bool:
        record = await store.get_run(parked.run_id)
        return record is not None and record.status not in ("waiting", "running")

    await until(settled)
    await legacy.resumer.drain()
    done = await store.get_run(parked.run_id)
    assert done is not None and done.status == "completed", done
    assert done.output is not None and done.output.startswith("Order 1004 (desk lamp) is delivered")
    assert legacy.resumer.resumed == [parked.run_id]
    executor = legacy.gateway.executor("lookup_order_async")
    assert isinstance(executor, MqToolExecutor) and executor.bridge.stats.sent == 1
    assert responder.text().count(f"committed {cid}") == 1 and inquiries(state, cid) == 1


async def test_a_parked_run_resumes_after_a_restart_over_redis_streams(
    tmp_path: Path, redis_stream: str, start_responder: Any, make_fleet: Any
) -> None:
    state = tmp_path / "order-system"
    # Slow enough that the first fleet is surely gone before the reply comes.
    responder = start_responder(redis_stream, transport="redis_streams", state=state, latency_ms=3000)
    fleet = redis_fleet(tmp_path, redis_stream)
    first = make_fleet(fleet)
    assert first.resumer is not None
    await first.resumer.start()
    parked = await first.run("orders-async", "Where is order 1001?")
    assert parked.status == "waiting", parked.error
    await first.aclose()  # the whole fleet goes away while the request is in flight
    cid = correlation_id_for(
        "lookup_order_async", next(s for s in parked.steps if s["kind"] == "tool")["call_id"]
    )
    await asyncio.to_thread(responder.wait_for, f"committed {cid}")  # answered while nothing listens

    second = make_fleet(fleet)
    assert second.resumer is not None
    await second.resumer.start()  # reads the reply from the durable reply stream and resumes the run
    store = second.loops["orders-async"]._store

    async def settled() -> bool:
        record = await store.get_run(parked.run_id)
        return record is not None and record.status not in ("waiting", "running")

    await until(settled)
    await second.resumer.drain()
    done = await store.get_run(parked.run_id)
    assert done is not None and done.status == "completed", done
    assert done.output is not None and done.output.startswith("Order 1001 (backpack) is shipped")
    executor = second.gateway.executor("lookup_order_async")
    assert isinstance(executor, MqToolExecutor) and executor.bridge.stats.sent == 0  # nothing sent again
    assert responder.text().count(f"committed {cid}") == 1 and inquiries(state, cid) == 1
