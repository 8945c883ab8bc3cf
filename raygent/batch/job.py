"""The batch job's entrypoint: ``python -m raygent.batch.job BATCH_DIR [--executor ray|local]``.

Submitted as a Ray Job by ``raygent batch submit`` (the job's driver connects to the cluster through
``RAY_ADDRESS``, which Ray Jobs sets), it runs the batch on a pool of actors spread over the nodes. With
``--executor local`` it runs every item in this process, without Ray. SIGTERM (``raygent batch cancel``,
which stops the Ray job) and SIGINT mark the batch cancelled, write the results so far, and exit 130;
SIGKILL leaves progress.db as it was after the last finished item, which is all ``resume`` needs.

Every few seconds a line ``raygent-batch-progress {json}`` goes to stdout, so the job's log (``ray job
logs``) shows progress even where the batch directory cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from raygent.batch.executor import Executor, LocalExecutor, RayExecutor
from raygent.batch.manifest import BatchPaths
from raygent.batch.progress import ProgressStore
from raygent.batch.runner import BatchRunner
from raygent.core.clock import SystemClock
from raygent.core.errors import RaygentError

__all__ = ["PROGRESS_PREFIX", "main"]

PROGRESS_PREFIX = "raygent-batch-progress "
EXIT_CANCELLED = 130


def _init_ray() -> None:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    # Under Ray Jobs RAY_ADDRESS names the cluster; run by hand without it, this starts a local Ray.
    ray.init(logging_level=logging.WARNING, log_to_driver=os.environ.get("RAYGENT_RAY_LOGS", "0") == "1")


async def _report(progress: ProgressStore, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        print(PROGRESS_PREFIX + json.dumps(progress.summary().to_json()), flush=True)


async def _run(runner: BatchRunner, interval_s: float) -> str:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    reporter = asyncio.create_task(_report(runner.progress, interval_s))
    try:
        await runner.run()
    except asyncio.CancelledError:
        return "cancelled"
    finally:
        reporter.cancel()
    return "completed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raygent.batch.job", description=__doc__)
    parser.add_argument("batch_dir", type=Path)
    parser.add_argument("--executor", choices=("ray", "local"), default="ray")
    parser.add_argument("--progress-interval-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths = BatchPaths(args.batch_dir.resolve())
    try:
        manifest = paths.read_manifest()
        fleet = manifest.load_fleet()
    except (OSError, ValueError, RaygentError) as exc:
        print(f"batch job cannot start: {exc}", file=sys.stderr)
        return 2
    if manifest.agent not in fleet.agents:
        print(
            f"batch job cannot start: no agent {manifest.agent!r} in {manifest.fleet_file}", file=sys.stderr
        )
        return 2
    executor: Executor
    if args.executor == "ray":
        _init_ray()
        executor = RayExecutor(manifest)
    else:
        executor = LocalExecutor(manifest)
    runner = BatchRunner(
        paths,
        manifest,
        executor,
        max_input_chars=fleet.agents[manifest.agent].max_input_chars,
        clock=SystemClock(),
    )
    try:
        outcome = asyncio.run(_run(runner, args.progress_interval_s))
        summary = runner.progress.summary()
    finally:
        runner.close()
    print(PROGRESS_PREFIX + json.dumps(summary.to_json()), flush=True)
    print(
        f"batch {manifest.batch_id} {outcome}: {summary.completed} completed, {summary.failed} failed, "
        f"{summary.invalid} invalid lines of {summary.total}; spend ${summary.cost_usd:.6f} "
        f"(all-premium ${summary.premium_cost_usd:.6f})",
        flush=True,
    )
    return EXIT_CANCELLED if outcome == "cancelled" else 0


if __name__ == "__main__":
    sys.exit(main())
