"""MQ round trip: raygent's MQ bridge (the ``mq`` tool kind) vs a bare aio-pika RPC client, one run.

Both sides talk to the same RabbitMQ, the same durable quorum request queue and the same responder
process (the legacy-mainframe example's, zero added latency), send the same 20-byte fixed-width request
with persistent delivery and publisher confirms, and wait for the reply on an exclusive reply queue.
The bare client is the aio-pika RPC tutorial's; raygent's side is the whole tool executor: JSON →
fixed-width encoding, correlation id, trace headers, the bridge, reply decoding and the JSON result check.
Calls alternate in blocks so drift on this shared machine hits both sides alike.

    .venv/bin/python -m benchmarks.mq_roundtrip [--calls 600] [--concurrency 1 16]

Target: raygent p50 at most 1.2x bare. Writes benchmarks/results/mq_roundtrip.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from raygent.core.clock import SystemClock
from raygent.core.config import RabbitMqTransportSpec
from raygent.core.fleetfile import load_fleet
from raygent.integrations.context import ToolContext
from raygent.integrations.mq.rabbitmq import declare_request_queue
from raygent.integrations.mq.tool import MqToolExecutor

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "legacy_mainframe"
URL = "amqp://guest:guest@127.0.0.1:5672/"
RESULTS = REPO / "benchmarks" / "results" / "mq_roundtrip.json"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import ray

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "aio_pika": aio_pika.__version__,
        "platform": platform.platform(),
        "load_average_1m": os.getloadavg()[0],
    }


class BareRpcClient:
    """The aio-pika RPC tutorial client, with the same durability as the bridge."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.futures: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        self.connection = await aio_pika.connect_robust(URL)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.callback_queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await self.callback_queue.consume(self.on_response, no_ack=True)

    async def on_response(self, message: AbstractIncomingMessage) -> None:
        future = self.futures.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self, body: bytes) -> bytes:
        cid = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.futures[cid] = future
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                body,
                correlation_id=cid,
                message_id=cid,
                reply_to=self.callback_queue.name,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.queue,
        )
        return await future

    async def close(self) -> None:
        await self.connection.close()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(call: Any, calls: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "throughput_per_s": len(latencies) / elapsed,
    }


def merge(blocks: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(b[key] for b in blocks) for key in blocks[0]}


async def run(calls: int, concurrencies: list[int], queue: str, state: Path) -> dict[str, Any]:
    fleet = load_fleet(EXAMPLE / "fleet.yaml", state_dir=state)
    spec = fleet.tools["lookup_order"]
    transport = RabbitMqTransportSpec(kind="rabbitmq", url=URL, request_queue=queue)
    spec = spec.model_copy(update={"transport": transport, "resend_after_s": None})
    tool = MqToolExecutor("lookup_order", spec, base_dir=EXAMPLE, state_dir=state, clock=SystemClock())  # type: ignore[arg-type]
    body = tool.codec.encode({"order_id": "1001"})
    bare = BareRpcClient(queue)
    await bare.start()
    await tool.bridge.start()
    run_id = uuid.uuid4().hex[:8]

    async def raygent_call(index: int) -> None:
        key = f"{run_id}-{index}-{uuid.uuid4().hex[:6]}"
        ctx = ToolContext(key, key, "bench", "bench", "orders", "svc-orders@acme", state)
        result = await tool.call(ctx, {"order_id": "1001"}, timeout_s=10)
        assert result["status"] == "shipped"

    async def bare_call(index: int) -> None:
        reply = await bare.call(body)
        assert len(reply) == tool.codec.reply.length  # type: ignore[attr-defined]

    results: dict[str, Any] = {}
    try:
        await measure(raygent_call, 100, 4)  # warm both paths, the broker and the responder
        await measure(bare_call, 100, 4)
        for concurrency in concurrencies:
            blocks: dict[str, list[dict[str, float]]] = {"bare_aio_pika": [], "raygent_bridge": []}
            block = max(50, calls // 6)
            for _ in range(max(1, calls // block)):
                blocks["bare_aio_pika"].append(await measure(bare_call, block, concurrency))
                blocks["raygent_bridge"].append(await measure(raygent_call, block, concurrency))
            bare_stats, ours = merge(blocks["bare_aio_pika"]), merge(blocks["raygent_bridge"])
            results[f"concurrency_{concurrency}"] = {
                "bare_aio_pika": bare_stats,
                "raygent_bridge": ours,
                "ratio_p50": ours["p50_ms"] / bare_stats["p50_ms"],
                "ratio_p99": ours["p99_ms"] / bare_stats["p99_ms"],
                "ratio_throughput": ours["throughput_per_s"] / bare_stats["throughput_per_s"],
                "calls_per_side": block * max(1, calls // block),
            }
    finally:
        await tool.aclose()
        await bare.close()
    return results


async def drop_queues(queue: str) -> None:
    connection = await aio_pika.connect_robust(URL)
    async with connection:
        channel = await connection.channel()
        for name in (queue, f"{queue}.dlq"):
            await channel.queue_delete(name)


async def declare(queue: str) -> None:
    connection = await aio_pika.connect_robust(URL)
    async with connection:
        channel = await connection.channel()
        await declare_request_queue(
            channel, RabbitMqTransportSpec(kind="rabbitmq", url=URL, request_queue=queue)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="MQ bridge vs bare aio-pika RPC, one run.")
    parser.add_argument("--calls", type=int, default=600, help="Calls per side and concurrency.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    queue = f"bench-osr-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        asyncio.run(declare(queue))
        log = state / "responder.log"
        # Its stdout goes to a file: it prints a line per request, which would fill a pipe and stall it.
        with log.open("w") as out:
            responder = subprocess.Popen(
                [sys.executable, str(EXAMPLE / "responder.py"), "--queue", queue, "--state-dir", str(state)],
                stdout=out,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 60
            while "ready" not in log.read_text():
                if responder.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the responder did not start:\n{log.read_text()}")
                time.sleep(0.05)
            results = asyncio.run(run(args.calls, args.concurrency, queue, state))
        finally:
            os.killpg(responder.pid, signal.SIGTERM)
            responder.wait(10)
            asyncio.run(drop_queues(queue))
    report = {
        "benchmark": "mq_roundtrip",
        "what": "tool call over RabbitMQ request/reply: raygent mq tool executor vs bare aio-pika RPC client",
        "broker": "RabbitMQ (local), durable quorum request queue, persistent messages, publisher confirms",
        "target": "raygent p50 <= 1.2x bare",
        "machine": machine(),
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for name, row in results.items():
        bare, ours = row["bare_aio_pika"], row["raygent_bridge"]
        print(f"{name}: {row['calls_per_side']} calls per side")
        for label, stats in (("bare aio-pika", bare), ("raygent bridge", ours)):
            print(
                f"  {label:15} p50 {stats['p50_ms']:7.2f} ms  p99 {stats['p99_ms']:7.2f} ms  "
                f"{stats['throughput_per_s']:8.1f} calls/s"
            )
        print(
            f"  ratio raygent/bare: p50 {row['ratio_p50']:.3f}x  p99 {row['ratio_p99']:.3f}x  "
            f"throughput {row['ratio_throughput']:.3f}x"
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
