"""The autoscaler adds worker nodes for a batch that needs more workers than the head can host, and
removes them once idle (scripts/autoscale_demo.py, its own cluster in a subprocess; events, not timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "autoscale_demo.py"


def test_batch_load_scales_the_cluster_up_then_down(tmp_path: Path) -> None:
    out = tmp_path / "autoscale"
    items, idle = "40", "4"  # one agent node: 2 actors of agents: 1 fit a node of agents: 2
    args = [
        "--items",
        items,
        "--max-workers",
        "1",
        "--idle-timeout-s",
        idle,
        "--timeout-s",
        "150",
        "--out",
        str(out),
    ]
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["batch"]["completed"] == 40
    assert result["max_nodes"] == 2  # the head and the one agent node the batch needed
    assert result["scale_up_events"] >= 1 and result["scale_down_events"] >= 1
    assert result["final_nodes"] == 1
    counts = [n for _, n in result["samples"]]
    peak = counts.index(2)
    assert counts[0] == 1 and counts[-1] == 1 and 0 < peak < len(counts) - 1  # up first, then down
    assert out.with_suffix(".png").stat().st_size > 0
