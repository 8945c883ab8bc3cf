"""The `raygent` command line through its real entry point: messages and exit codes, never a traceback."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from raygent.core.fleetfile import load_fleet
from raygent.core.store import open_store
from raygent.core.store.base import AuditDraft

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "support_desk" / "fleet.yaml"
RAYGENT = str(Path(sys.executable).parent / "raygent")


def raygent(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([RAYGENT, *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert "Traceback" not in done.stdout + done.stderr
    return done


def test_check_accepts_the_example() -> None:
    done = raygent("check", str(EXAMPLE))
    assert done.returncode == 0
    assert "ok — 3 agents, 4 tools, 2 models" in done.stdout


def test_check_reports_every_problem_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text(
        "name: x\n"
        "models: {m: {kind: offline, tier: cheap}}\n"
        "agents:\n"
        "  a: {identity: s, prompt: p@1, max_step: 3}\n"
        "  b: {identity: s, prompt: 7}\n"
    )
    done = raygent("check", str(bad))
    assert done.returncode == 2
    lines = done.stdout.strip().splitlines()
    assert f"{bad}:4:33: agents.a.max_step: unknown key" in lines[0]
    assert any(line.startswith(f"{bad}:5:") and "prompt" in line for line in lines)
    assert "problem(s) found" in done.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["frob"], "No such command"),
        (["run", "support"], "Missing argument"),
        (["run", "nobody", "hi"], "no agent 'nobody'"),
        (["run", "support", "x" * 16_001], "INPUT must be 1 to 16000 characters"),
        (["up", "/no/such/fleet.yaml"], "cannot read the file"),
        (["up", str(EXAMPLE), "--port", "99999"], "--port"),
    ],
)
def test_usage_errors_exit_2_with_a_message(args: list[str], fragment: str) -> None:
    done = raygent(*args)
    assert done.returncode == 2
    assert fragment in done.stderr + done.stdout


async def _seed_audit(state: Path) -> None:
    store = open_store(load_fleet(EXAMPLE, state_dir=state))
    drafts = [
        AuditDraft(ts=1.0 + i, kind="tool_call", run_id=f"r{i % 2}", session_id="s", agent="orders",
                   identity="svc-orders@acme", payload={"tool": "lookup_order", "n": i})
        for i in range(6)
    ]  # fmt: skip
    await store.append_audit(drafts)
    await store.close()


def test_audit_query_and_verify(tmp_path: Path) -> None:
    asyncio.run(_seed_audit(tmp_path))
    done = raygent("audit", "query", "--state-dir", str(tmp_path), "--run", "r1")
    assert done.returncode == 0
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["seq"] for r in records] == [2, 4, 6]
    assert all(r["payload"]["tool"] == "lookup_order" for r in records)
    ok = raygent("audit", "verify", "--state-dir", str(tmp_path))
    assert ok.returncode == 0 and "6 records" in ok.stdout
    with sqlite3.connect(tmp_path / "raygent.db") as conn:
        triggers = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
        for name in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("UPDATE audit SET payload = ? WHERE seq = 3", ('{"tool":"issue_refund","n":2}',))
    broken = raygent("audit", "verify", "--state-dir", str(tmp_path))
    assert broken.returncode == 1
    assert "seq 3" in broken.stderr
