"""Autoscaling shown working on one machine: Ray's fake multi-node provider adds worker nodes for a batch
that needs more workers than the head can host, and removes them once they are idle.

    .venv/bin/python scripts/autoscale_demo.py [--items 240] [--max-workers 3] [--idle-timeout-s 8]

The head declares no ``agents`` resource; the batch asks for ``2 * max_workers`` worker actors that each
need ``agents: 1``, and a ``cpu_agents`` node (the worker type of cluster.yaml) provides ``agents: 2``.
So the autoscaler must start ``max_workers`` nodes; when the batch ends its actors go away, the nodes sit
idle and are terminated after ``idle_timeout``. The node count is sampled every half second from the
start and written, with the events (scale-ups, scale-downs), to ``benchmarks/results/autoscale_nodes.json``
and plotted to ``benchmarks/results/autoscale_nodes.png``. Exit status 0 when the cluster scaled up and
back down, 1 otherwise.

The cluster is this process's own (free ports, ``ray.cluster_utils.Cluster`` with an autoscaling
config): unlike ``AutoscalingCluster`` it never runs ``ray stop``, which would stop every Ray on the
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Read by the autoscaler (the monitor process the head starts): the fake provider refuses to run
# without the first, and the second makes it re-plan every second instead of every five.
os.environ["RAY_FAKE_CLUSTER"] = "1"
os.environ["AUTOSCALER_UPDATE_INTERVAL_S"] = "1"

import contextlib
import itertools

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = REPO / "examples" / "support_desk"
RESULTS = REPO / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def autoscaling_config(gcs_address: str, *, max_workers: int, idle_timeout_s: float) -> dict[str, Any]:
    """A cluster launcher config for the fake provider, shaped like cluster.yaml's agent worker type."""
    return {
        "cluster_name": "raygent-autoscale-demo",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "disable_launch_config_check": True,
            "disable_node_updaters": True,
            "use_node_id_as_ip": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "cpu_agents": {
                "resources": {"CPU": 1, "agents": 2},
                "labels": {"raygent-role": "agents"},
                "node_config": {},
                "min_workers": 0,
                "max_workers": max_workers,
            },
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), so cleanup stops only what this script started."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class NodeSampler(threading.Thread):
    """Samples the number of alive nodes every ``interval_s`` seconds."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self._interval_s = interval_s
        self._stop_event = threading.Event()
        self._started_at = time.monotonic()

    def run(self) -> None:
        import ray

        while not self._stop_event.is_set():
            alive = sum(1 for node in ray.nodes() if node["Alive"])
            self.samples.append((round(time.monotonic() - self._started_at, 2), alive))
            self._stop_event.wait(self._interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    @property
    def current(self) -> int:
        return self.samples[-1][1] if self.samples else 0


def events(samples: list[tuple[float, int]]) -> dict[str, Any]:
    ups = downs = 0
    for (_, before), (_, after) in itertools.pairwise(samples):
        ups += after > before
        downs += after < before
    counts = [n for _, n in samples]
    return {
        "scale_up_events": ups,
        "scale_down_events": downs,
        "max_nodes": max(counts),
        "final_nodes": counts[-1],
    }


async def run_batch(fleet_dir: Path, items: int, workers: int) -> dict[str, Any]:
    from raygent.batch.client import BatchClient
    from raygent.batch.executor import RayExecutor
    from raygent.batch.runner import BatchRunner
    from raygent.core.clock import SystemClock
    from raygent.core.fleetfile import load_fleet

    fleet_file = fleet_dir / "fleet.yaml"
    fleet = load_fleet(fleet_file)
    client = BatchClient(fleet, fleet_file, clock=SystemClock())
    source = fleet_dir / "input.jsonl"
    source.write_text(
        "".join(json.dumps({"input": f"where is order {1001 + i % 100}?"}) + "\n" for i in range(items))
    )
    paths = client.create(source, agent="orders", workers=workers, max_concurrency=4 * workers)
    manifest = paths.read_manifest()
    runner = BatchRunner(paths, manifest, RayExecutor(manifest), max_input_chars=16_000, clock=SystemClock())
    started = time.monotonic()
    try:
        summary = await runner.run()
    finally:
        runner.close()
    return {
        "batch_id": manifest.batch_id,
        "items": items,
        "completed": summary.completed,
        "workers": workers,
        "seconds": round(time.monotonic() - started, 2),
    }


def prepare_fleet(root: Path, max_workers: int) -> Path:
    for name in ("tools.py", "orders.json"):
        shutil.copyfile(EXAMPLE_DIR / name, root / name)
    fleet = yaml.safe_load((EXAMPLE_DIR / "fleet.yaml").read_text())
    for model in fleet["models"].values():
        model["latency_ms"] = 20
    fleet["batch"] = {"worker_resources": {"agents": 1}, "worker_num_cpus": 0.01, "workers": 2 * max_workers}
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet, sort_keys=False))
    return root


def plot(samples: list[tuple[float, int]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(8, 3.5))
    axes.step([t for t, _ in samples], [n for _, n in samples], where="post")
    axes.set_xlabel("seconds")
    axes.set_ylabel("alive Ray nodes (head + workers)")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=240)
    parser.add_argument("--max-workers", type=int, default=3)
    parser.add_argument("--idle-timeout-s", type=float, default=8.0)
    parser.add_argument("--timeout-s", type=float, default=240.0, help="Give up waiting for scale-down.")
    parser.add_argument("--out", type=Path, default=RESULTS / "autoscale_nodes")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    work = Path(tempfile.mkdtemp(prefix="raygent-autoscale-"))
    gcs_port = free_port()
    config_path = work / "autoscaling.yaml"
    config_path.write_text(
        yaml.safe_dump(
            autoscaling_config(
                f"127.0.0.1:{gcs_port}", max_workers=args.max_workers, idle_timeout_s=args.idle_timeout_s
            )
        )
    )
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "gcs_server_port": gcs_port,
            "node_ip_address": "127.0.0.1",
            "autoscaling_config": str(config_path),
            "include_dashboard": False,
            "dashboard_agent_listen_port": free_port(),
        },
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sampler = NodeSampler()
    result: dict[str, Any] = {}
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        sampler.start()
        fleet_dir = prepare_fleet(work, args.max_workers)
        result["batch"] = asyncio.run(run_batch(fleet_dir, args.items, 2 * args.max_workers))
        deadline = time.monotonic() + args.timeout_s
        while sampler.current > 1 and time.monotonic() < deadline:  # idle nodes go after the timeout
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        sampler.stop()
        ray.shutdown()
        cluster.shutdown()
        for pid in descendants(os.getpid()):  # fake worker nodes the autoscaler had not removed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)

    result.update(events(sampler.samples))
    result["samples"] = sampler.samples
    result["config"] = {
        "max_workers": args.max_workers,
        "idle_timeout_s": args.idle_timeout_s,
        "head": {"CPU": 1},
        "worker": {"CPU": 1, "agents": 2},
        "actors": {"count": 2 * args.max_workers, "resources": {"agents": 1}},
    }
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    plot(
        sampler.samples,
        args.out.with_suffix(".png"),
        "raygent batch on an autoscaling cluster (fake provider)",
    )
    ok = result["max_nodes"] > 1 and result["scale_up_events"] >= 1 and result["scale_down_events"] >= 1
    ok = ok and result["final_nodes"] == 1
    print(
        json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2),
        f"\nnode count plotted to {args.out.with_suffix('.png')}",
        sep="",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
