"""A multi-node Ray cluster on this machine, in its own process, for the batch tests.

``python cluster_proc.py INFO_FILE [--workers N] [--agents-per-node K]`` starts a head (with the
dashboard, so the Ray Jobs API answers) and N worker nodes declaring the custom resource ``agents``,
writes ``{"dashboard_url", "gcs_address", "workers": [node ids]}`` to INFO_FILE, then waits:
SIGUSR1 kills the first remaining worker node (its id is appended to ``removed`` in INFO_FILE),
SIGTERM or SIGINT shuts the whole cluster down. Ports are picked free, so it never collides with the
test session's own Ray or anyone else's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("info", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--agents-per-node", type=float, default=4)
    args = parser.parse_args()

    from ray.cluster_utils import Cluster

    dashboard_port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "gcs_server_port": free_port(),
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port,
            "dashboard_agent_listen_port": free_port(),
            "node_ip_address": "127.0.0.1",
        },
    )
    workers = [
        cluster.add_node(
            num_cpus=1,
            resources={"agents": args.agents_per_node},
            dashboard_agent_listen_port=free_port(),
            node_ip_address="127.0.0.1",
        )
        for _ in range(args.workers)
    ]
    cluster.wait_for_nodes()
    info = {
        "dashboard_url": f"http://127.0.0.1:{dashboard_port}",
        "gcs_address": cluster.address,
        "workers": [node.node_id for node in workers],
        "removed": [],
    }
    lock = threading.Lock()
    stop = threading.Event()

    def write() -> None:
        tmp = args.info.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(args.info)

    def kill_worker(signum: int, frame: object) -> None:
        with lock:
            if workers:
                node = workers.pop(0)
                cluster.remove_node(node, allow_graceful=False)
                info["removed"].append(node.node_id)
                write()

    signal.signal(signal.SIGUSR1, kill_worker)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    _wait_for_jobs_api(info["dashboard_url"])
    _wait_for_job_agent(info["dashboard_url"], Path(cluster.head_node.get_logs_dir_path()))
    write()
    while not stop.wait(0.2):
        pass
    cluster.shutdown()
    return 0


def _wait_for_jobs_api(url: str, timeout_s: float = 180.0) -> None:
    """Until the dashboard answers. Started from a process that ran ``ray.init`` (pytest), this cluster
    inherits ``RAY_AUTH_MODE=token``: the dashboard then answers 401 without Ray's token, so the probe
    sends it the way Ray's own clients do (``RAY_AUTH_TOKEN``, else ``~/.ray/auth_token``)."""
    import urllib.error
    import urllib.request

    headers = {}
    token = os.environ.get("RAY_AUTH_TOKEN") or _token_file()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(f"{url}/api/version", headers=headers)
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise SystemExit(f"the Ray Jobs API did not come up at {url} within {timeout_s:.0f} s (last: {last})")


def _wait_for_job_agent(url: str, logs: Path, timeout_s: float = 180.0) -> None:
    """Until the head's job agent runs a job: the dashboard answers before that agent has registered
    (on a loaded 2-core machine, for tens of seconds), and every submission meanwhile is refused.
    When it never comes, the agent's own log says why."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(url)
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            job = client.submit_job(entrypoint="true")
        except RuntimeError as exc:
            last = str(exc)[:200]
            time.sleep(1)
            continue
        while time.monotonic() < deadline:
            if client.get_job_status(job) in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                return
            time.sleep(0.2)
    tail = ""
    for name in ("dashboard_agent.log", "raylet.out"):
        if (logs / name).exists():
            lines = (logs / name).read_text(errors="replace").splitlines()[-30:]
            tail += f"\n--- {name}\n" + "\n".join(lines)
    raise SystemExit(f"the head's job agent took no job within {timeout_s:.0f} s (last: {last}){tail}")


def _token_file() -> str:
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", str(Path.home() / ".ray" / "auth_token")))
    try:
        return path.read_text().strip()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
