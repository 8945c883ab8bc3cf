"""Shared by the serving benchmarks: machine description, local Ray + Serve, small fleets, results."""

from __future__ import annotations

import json
import os
import platform
import socket
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from raygent.core.config import Fleet

RESULTS = Path(__file__).resolve().parent / "results"
ANSWER = "one two three four five six seven eight nine ten"


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
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "platform": platform.platform(),
        "note": "shared 2-core machine; other work may run beside the benchmark",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(port: int) -> None:
    import logging

    import ray
    from ray import serve

    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})


def stop_serve() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def one_agent_fleet(
    name: str,
    state_dir: Path,
    *,
    latency_ms: float = 0.0,
    max_ongoing_requests: int = 64,
    max_queued_requests: int = 256,
    replicas: int = 1,
) -> Fleet:
    """One agent ``bench`` answering every input in one model step (no tools)."""
    return Fleet.model_validate(
        {
            "name": name,
            "server": {"num_cpus": 0.1},
            "models": {
                "m": {"kind": "offline", "latency_ms": latency_ms, "rules": [{"match": ".", "say": ANSWER}]}
            },
            "prompts": {"p": {"versions": {"1": "You are $agent. Be brief."}}},
            "agents": {
                "bench": {
                    "identity": "svc-bench",
                    "prompt": "p@1",
                    "max_ongoing_requests": max_ongoing_requests,
                    "max_queued_requests": max_queued_requests,
                    "replicas": replicas,
                }
            },
            "state_dir": str(state_dir),
        }
    )


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    # The load average says how much else ran on the machine: on a shared box it explains the spread.
    described = {**machine(), "load_average_1m_at_end": round(os.getloadavg()[0], 1)}
    path.write_text(json.dumps({"machine": described, **data}, indent=2) + "\n")
    return path
