"""Batches as Ray jobs on a real multi-node cluster (a head and two worker nodes with the ``agents``
resource, started by cluster_proc.py in its own process, so it never meets the session's Ray).

* agents spread over the worker nodes, and killing a worker node mid-batch loses no line;
* ``raygent batch cancel`` then ``resume``: every line once, no refund twice.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from raygent.batch.client import BatchClient
from raygent.batch.progress import ProgressStore
from raygent.core.clock import SystemClock
from raygent.core.fleetfile import load_fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_DIR = REPO / "examples" / "support_desk"
RAYGENT = str(Path(sys.executable).parent / "raygent")
ORDERS = json.loads((EXAMPLE_DIR / "orders.json").read_text())
DELIVERED = sorted(k for k, v in ORDERS.items() if v["status"] == "delivered")


@dataclass
class RayCluster:
    process: subprocess.Popen[bytes]
    info_file: Path
    fleet_file: Path

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.info_file.read_text())
        return data

    @property
    def address(self) -> str:
        return str(self.info()["dashboard_url"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    root = tmp_path_factory.mktemp("batch-cluster")
    # The example fleet with slower model calls (so a node can die mid-batch) and batch workers that
    # ask for the `agents` resource (so they land on worker nodes only).
    for name in ("tools.py", "orders.json"):
        (root / name).write_bytes((EXAMPLE_DIR / name).read_bytes())
    fleet = yaml.safe_load((EXAMPLE_DIR / "fleet.yaml").read_text())
    for model in fleet["models"].values():
        model["latency_ms"] = 40
    fleet["batch"] = {"workers": 4, "max_concurrency": 16, "worker_resources": {"agents": 1}}
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet, sort_keys=False))
    info = root / "cluster.json"
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cluster_proc.py")), str(info)])
    deadline = time.monotonic() + 240
    while not info.exists():
        assert process.poll() is None, "the test cluster failed to start"
        assert time.monotonic() < deadline, "the test cluster did not start within 240 s"
        time.sleep(0.5)
    try:
        yield RayCluster(process, info, root / "fleet.yaml")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def raygent(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([RAYGENT, *args], capture_output=True, text=True, timeout=timeout_s)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def make_input(path: Path, count: int) -> list[str]:
    lines = []
    for i in range(count):
        if i % 40 == 39:
            lines.append("{broken")
        elif i % 3 == 0:
            body = {
                "messages": [
                    {"role": "user", "content": f"Please refund order {DELIVERED[i % len(DELIVERED)]}"}
                ]
            }
            lines.append(json.dumps({"custom_id": f"refund-{i}", "body": body}))
        else:
            lines.append(json.dumps({"input": f"where is order {1001 + i % 100}?"}))
    path.write_text("\n".join(lines) + "\n")
    return lines


def submit(cluster: RayCluster, input_file: Path) -> tuple[str, Path]:
    done = raygent(
        "batch",
        "submit",
        str(input_file),
        "--agent",
        "support",
        "-f",
        str(cluster.fleet_file),
        "--address",
        cluster.address,
    )
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.strip()
    return batch_id, cluster.fleet_file.parent / ".raygent" / "batches" / batch_id


def wait_finished(batch_dir: Path, at_least: int, timeout_s: float = 240) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (batch_dir / "progress.db").exists():
            with ProgressStore(batch_dir / "progress.db", readonly=True) as progress:
                if progress.summary().finished >= at_least:
                    return progress.finished_lines()
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} lines finished within {timeout_s} s")


def check_complete(batch_dir: Path, lines: list[str]) -> list[dict[str, Any]]:
    """Every line exactly once, correct answers, and one refund per refund request."""
    results = [json.loads(x) for x in (batch_dir / "results.jsonl").read_text().splitlines()]
    errors = [json.loads(x) for x in (batch_dir / "errors.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in results + errors) == list(range(1, len(lines) + 1))
    assert all(e["status"] == "invalid" for e in errors), errors[:3]
    assert [e["line"] for e in errors] == [n for n in range(1, len(lines) + 1) if n % 40 == 0]
    for result in results:
        text = lines[result["line"] - 1]
        if '"refund-' in text:
            assert result["output"].startswith("Refund rf_"), result
        else:
            order = ORDERS[text.split("order ")[1].split("?")[0]]
            assert result["output"].startswith(f"Order {order['order_id']} ({order['item']}) is "), result
    batch_id = batch_dir.name
    with sqlite3.connect(batch_dir.parents[1] / "ledger.db") as conn:
        keys = [
            k for (k,) in conn.execute("SELECT idempotency_key FROM refunds") if k.startswith(batch_id + ".")
        ]
    per_line = Counter(k.split(".l")[1].split("-")[0] for k in keys)
    refund_lines = {str(r["line"]) for r in results if r["custom_id"].startswith("refund-")}
    assert set(per_line) == refund_lines
    assert set(per_line.values()) == {1}
    return results


def test_agents_spread_over_nodes_and_a_lost_node_loses_no_line(cluster: RayCluster, tmp_path: Path) -> None:
    lines = make_input(tmp_path / "in.jsonl", 300)
    batch_id, batch_dir = submit(cluster, tmp_path / "in.jsonl")
    wait_finished(batch_dir, 75)
    before = cluster.info()
    workers_alive = [w for w in before["workers"] if w not in before["removed"]]
    assert len(workers_alive) == 2, "the cluster should still have both worker nodes"
    cluster.process.send_signal(signal.SIGUSR1)  # kill a worker node, with its actors and in-flight items
    deadline = time.monotonic() + 30
    while len(cluster.info()["removed"]) == len(before["removed"]):
        assert time.monotonic() < deadline, "the worker node was not removed"
        time.sleep(0.2)
    killed = cluster.info()["removed"][-1]

    follow = raygent(
        "batch", "status", batch_id, "-f", str(cluster.fleet_file), "--address", cluster.address, "--follow"
    )
    assert follow.returncode == 0, follow.stderr
    assert "all-premium estimate" in follow.stdout
    check_complete(batch_dir, lines)
    with ProgressStore(batch_dir / "progress.db", readonly=True) as progress:
        summary = progress.summary()
        nodes = progress.node_counts()
        attempts = Counter(r.attempts for r in progress.records() if r.status == "completed")
    assert (summary.failed, summary.completed) == (0, sum(line != "{broken" for line in lines))
    # Spread: both worker nodes ran items (the head has no `agents` resource, so it ran none).
    assert set(nodes) == set(workers_alive) and min(nodes.values()) > 0
    assert nodes[killed] < sum(nodes.values())
    assert max(attempts) > 1  # items in flight on the lost node ran again, elsewhere


def test_cancel_then_resume_runs_every_line_once(cluster: RayCluster, tmp_path: Path) -> None:
    lines = make_input(tmp_path / "in.jsonl", 240)
    batch_id, batch_dir = submit(cluster, tmp_path / "in.jsonl")
    wait_finished(batch_dir, 40)
    fleet = ["-f", str(cluster.fleet_file), "--address", cluster.address]
    # What `raygent batch cancel` calls, from this process: the CLI's start-up time could let a fast
    # machine finish the batch first.
    client = BatchClient(load_fleet(cluster.fleet_file), clock=SystemClock(), address=cluster.address)
    assert client.cancel(batch_id).job_id == batch_id
    deadline = time.monotonic() + 60
    while (view := json.loads(raygent("batch", "status", batch_id, *fleet, "--json").stdout))[
        "status"
    ] != "cancelled":
        assert time.monotonic() < deadline, view
        time.sleep(0.5)
    assert 40 <= view["finished"] < 240
    with ProgressStore(batch_dir / "progress.db", readonly=True) as progress:
        finished_before = {r.line: r.run_id for r in progress.records()}
    assert (batch_dir / "results.jsonl").exists()  # what finished is already readable

    again = raygent("batch", "cancel", batch_id, *fleet)
    assert again.returncode == 1 and "not running" in again.stderr

    resumed = raygent("batch", "resume", batch_id, *fleet, "--follow")
    assert resumed.returncode == 0, resumed.stderr
    check_complete(batch_dir, lines)
    view = json.loads(raygent("batch", "status", batch_id, *fleet, "--json").stdout)
    assert view["status"] == "completed" and view["job_ids"] == [batch_id, f"{batch_id}-r1"]
    with ProgressStore(batch_dir / "progress.db", readonly=True) as progress:
        after = {r.line: r for r in progress.records()}
    # Lines recorded before the cancel were kept as they were, not run again.
    assert all(
        after[line].run_id == run_id and after[line].attempts <= 1 for line, run_id in finished_before.items()
    )
    assert raygent("batch", "resume", batch_id, *fleet).returncode == 1  # completed: nothing to resume
