"""``raygent report cost`` over runs the example fleet really made (in-process, offline models)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from raygent.actors.inprocess import InProcessFleet
from raygent.core.config import Fleet
from raygent.core.runs import RunInput
from raygent.core.store import SQLiteStore

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "support_desk" / "fleet.yaml"
RAYGENT = str(Path(sys.executable).parent / "raygent")


def raygent(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([RAYGENT, *args], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stdout + done.stderr
    return done


def run_input(agent: str, text: str) -> RunInput:
    return RunInput(
        run_id=uuid.uuid4().hex, agent=agent, session_id=uuid.uuid4().hex, input=text, deadline_ts=1e12
    )


async def test_report_cost_sums_the_steps_and_prices_the_premium_counterfactual(
    inproc: InProcessFleet, store: SQLiteStore, example_fleet: Fleet
) -> None:
    for text in ("Where is order 1042?", "Please refund order 1042, it arrived broken", "hello"):
        await inproc.invoke(run_input("support", text))
    runs = await store.list_runs(limit=1000)
    steps = [s for r in runs for s in r.steps if s["kind"] == "model"]
    assert {s["backend"] for s in steps} == {"premium", "open-small"}  # orders runs on the cheap model

    done = raygent(
        "report", "cost", "--fleet", str(EXAMPLE), "--state-dir", example_fleet.state_dir, "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    premium = example_fleet.models["premium"]
    expected_spend = sum(s["cost_usd"] for s in steps)
    expected_premium = sum(
        s["input_tokens"] * premium.cost_per_1k_input_usd / 1000
        + s["output_tokens"] * premium.cost_per_1k_output_usd / 1000
        for s in steps
    )
    total = report["total"]
    assert report["premium_backend"] == "premium" and report["runs"] == len(runs)
    assert total["steps"] == len(steps)
    assert abs(total["cost_usd"] - expected_spend) < 1e-6
    assert abs(total["premium_cost_usd"] - expected_premium) < 1e-6
    assert 0 < total["savings_ratio"] < 1
    by_tier = {line["key"]: line for line in report["by_tier"]}
    assert by_tier["premium"]["savings_ratio"] == 0  # premium steps cost what premium costs
    assert by_tier["cheap"]["savings_ratio"] > 0.5
    assert {line["key"] for line in report["by_agent"]} == {r.agent for r in runs}

    table = raygent("report", "cost", "--fleet", str(EXAMPLE), "--state-dir", example_fleet.state_dir)
    assert table.returncode == 0 and "by model" in table.stdout and "saved" in table.stdout


def test_report_cost_rejects_unknown_names(tmp_path: Path) -> None:
    done = raygent(
        "report", "cost", "--fleet", str(EXAMPLE), "--state-dir", str(tmp_path), "--agent", "nobody"
    )
    assert done.returncode == 2 and "unknown agent 'nobody'" in done.stderr
    done = raygent(
        "report", "cost", "--fleet", str(EXAMPLE), "--state-dir", str(tmp_path), "--premium", "gpt-9"
    )
    assert done.returncode == 2 and "unknown model 'gpt-9'" in done.stderr
    empty = raygent("report", "cost", "--fleet", str(EXAMPLE), "--state-dir", str(tmp_path), "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout)["total"]["steps"] == 0
