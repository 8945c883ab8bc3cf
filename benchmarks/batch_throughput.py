"""Batch throughput: ``raygent batch`` (BatchRunner on Ray actors) against ``ray.data`` ``map_batches``
calling the same agent code directly (InProcessFleet), on the same items, in one run on one local Ray.

    .venv/bin/python -m benchmarks.batch_throughput [--items 600] [--rounds 3] [--concurrency 32]

Both sides run the example fleet's ``support`` agent at the cheap tier with the offline model (delegation,
tool calls, audit records and SQLite writes included), with the same number of worker processes and the
same number of items in flight (ray.data: two batches of ``concurrency / (2 * workers)`` items per
actor, so it keeps pipelining). raygent additionally records every finished item durably (progress.db)
and writes the results and errors files; that is the price of ``resume``. Wall time includes starting
the workers on both sides. The sides alternate over ``--rounds`` rounds (the order flips each round) so
that a change in machine load hits both; throughput is total items over total seconds per side.
Writes ``benchmarks/results/batch_throughput.json``; target ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
FLEET_FILE = REPO / "examples" / "support_desk" / "fleet.yaml"
RESULTS = REPO / "benchmarks" / "results"


def make_items(count: int) -> list[str]:
    orders = json.loads((FLEET_FILE.parent / "orders.json").read_text())
    ids = sorted(orders)
    texts = []
    for i in range(count):
        order = ids[i % len(ids)]
        texts.append(f"Please refund order {order}" if i % 3 == 0 else f"where is order {order}?")
    return texts


async def _gather(runs: list[Any]) -> list[str]:
    return list(await asyncio.gather(*runs))


class AgentBatchUDF:
    """The ray.data side: each actor builds the fleet once and runs a batch's items concurrently."""

    def __init__(self, state_dir: str) -> None:
        from opentelemetry.sdk.trace import TracerProvider

        from raygent.actors.inprocess import InProcessFleet
        from raygent.batch.agents import with_tier
        from raygent.core.clock import SystemClock
        from raygent.core.fleetfile import load_fleet
        from raygent.core.store import open_store

        fleet = with_tier(load_fleet(FLEET_FILE, state_dir=state_dir), "cheap")
        # Ray Data calls __call__ on a pool thread: the fleet lives on one event loop of its own.
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._fleet = InProcessFleet(
            fleet, store=open_store(fleet), tracer=TracerProvider().get_tracer("bench"), clock=SystemClock()
        )
        self._deadline_s = fleet.agents["support"].deadline_s

    async def _one(self, run_id: str, text: str) -> str:
        from raygent.core.runs import RunInput

        out = await self._fleet.invoke(
            RunInput(
                run_id=run_id,
                agent="support",
                input=text,
                session_id=run_id,
                deadline_ts=time.time() + self._deadline_s,
            )
        )
        return out.status

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        runs = [self._one(str(r), str(t)) for r, t in zip(batch["run_id"], batch["input"], strict=True)]
        statuses = asyncio.run_coroutine_threadsafe(_gather(runs), self._loop).result()
        return {"run_id": list(batch["run_id"]), "status": list(statuses)}


def run_ray_data(texts: list[str], state_dir: Path, *, workers: int, concurrency: int) -> dict[str, Any]:
    import ray

    items = [{"run_id": f"rd.l{i + 1}", "input": t} for i, t in enumerate(texts)]
    started = time.perf_counter()
    dataset = ray.data.from_items(items).map_batches(
        AgentBatchUDF,
        fn_constructor_kwargs={"state_dir": str(state_dir)},
        batch_size=max(1, concurrency // (2 * workers)),
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
        num_cpus=0.1,
        batch_format="numpy",
    )
    rows = dataset.take_all()
    seconds = time.perf_counter() - started
    completed = sum(1 for row in rows if row["status"] == "completed")
    return {
        "items": len(rows),
        "completed": completed,
        "seconds": seconds,
        "items_per_s": len(rows) / seconds,
    }


def run_raygent(texts: list[str], state_dir: Path, *, workers: int, concurrency: int) -> dict[str, Any]:
    from raygent.batch.client import BatchClient
    from raygent.batch.executor import RayExecutor
    from raygent.batch.runner import BatchRunner
    from raygent.core.clock import SystemClock
    from raygent.core.fleetfile import load_fleet

    fleet = load_fleet(FLEET_FILE, state_dir=state_dir)
    source = state_dir / "input.jsonl"
    source.write_text("".join(json.dumps({"input": t}) + "\n" for t in texts))
    client = BatchClient(fleet, FLEET_FILE, clock=SystemClock())
    paths = client.create(source, agent="support", max_concurrency=concurrency, workers=workers)
    manifest = paths.read_manifest()
    runner = BatchRunner(paths, manifest, RayExecutor(manifest), max_input_chars=16_000, clock=SystemClock())
    started = time.perf_counter()
    try:
        summary = asyncio.run(runner.run())
    finally:
        runner.close()
    seconds = time.perf_counter() - started
    return {
        "items": summary.finished,
        "completed": summary.completed,
        "seconds": seconds,
        "items_per_s": summary.finished / seconds,
        "spend_usd": round(summary.cost_usd, 6),
        "all_premium_usd": round(summary.premium_cost_usd, 6),
    }


def machine() -> dict[str, Any]:
    import ray

    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__}


def total(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    items, seconds = sum(r["items"] for r in rounds), sum(r["seconds"] for r in rounds)
    return {"items": items, "seconds": round(seconds, 3), "items_per_s": items / seconds, "rounds": rounds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=600, help="Items per side per round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    texts = make_items(args.items)
    work = Path(tempfile.mkdtemp(prefix="raygent-batch-bench-"))
    sides: dict[str, list[dict[str, Any]]] = {"ray_data_map_batches": [], "raygent_batch": []}
    runs = {"ray_data_map_batches": run_ray_data, "raygent_batch": run_raygent}
    try:
        for round_no in range(args.rounds):
            order = list(runs) if round_no % 2 == 0 else list(reversed(runs))
            for name in order:
                state = work / f"{name}-{round_no}"
                state.mkdir()
                sides[name].append(
                    runs[name](texts, state, workers=args.workers, concurrency=args.concurrency)
                )
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    peer, ours = total(sides["ray_data_map_batches"]), total(sides["raygent_batch"])
    ratio = ours["items_per_s"] / peer["items_per_s"]
    result = {
        "benchmark": "batch_throughput",
        "items_per_round": args.items,
        "rounds": args.rounds,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "ray_data_map_batches": peer,
        "raygent_batch": ours,
        "ratio_raygent_over_ray_data": round(ratio, 3),
        "target_ratio": 0.8,
        "machine": machine(),
        "load_average_after": os.getloadavg(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch_throughput.json").write_text(json.dumps(result, indent=2))
    print(f"{'side':<24}{'items':>8}{'seconds':>10}{'items/s':>10}   per round (items/s)")
    for name, side in (("ray.data map_batches", peer), ("raygent batch", ours)):
        per_round = " ".join(f"{r['items_per_s']:.1f}" for r in side["rounds"])
        print(
            f"{name:<24}{side['items']:>8}{side['seconds']:>10.2f}{side['items_per_s']:>10.1f}   {per_round}"
        )
    print(f"ratio raygent / ray.data: {ratio:.2f} (target >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
