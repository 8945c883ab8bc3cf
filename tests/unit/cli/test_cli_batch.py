"""`raygent batch` through its real entry point, without Ray: run, status, results, errors, usage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "support_desk" / "fleet.yaml"
RAYGENT = str(Path(sys.executable).parent / "raygent")


def raygent(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([RAYGENT, *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr
    return done


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    lines = [
        json.dumps(
            {"custom_id": "a", "body": {"messages": [{"role": "user", "content": "where is order 1004?"}]}}
        ),
        "not json at all",
        json.dumps({"input": "hello"}),
        json.dumps({"input": "hello", "custom_id": "a"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_status_results_and_errors(tmp_path: Path, input_file: Path) -> None:
    state = str(tmp_path / "state")
    done = raygent("batch", "run", str(input_file), "--agent", "orders", "--state-dir", state)
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.splitlines()[0]
    assert batch_id.startswith("batch_")
    assert "all-premium estimate" in done.stdout and "2 completed · 0 failed · 2 invalid lines" in done.stdout

    status = raygent(
        "batch", "status", batch_id, "--state-dir", state, "--json", "--address", "http://127.0.0.1:9"
    )
    assert status.returncode == 0
    view = json.loads(status.stdout)
    assert (view["status"], view["total"], view["completed"], view["invalid"]) == ("completed", 4, 2, 2)
    assert view["tier"] == "cheap" and view["premium_cost_usd"] > view["cost_usd"] > 0

    results = [
        json.loads(x) for x in raygent("batch", "results", batch_id, "--state-dir", state).stdout.splitlines()
    ]
    assert [(r["line"], r["custom_id"]) for r in results] == [(1, "a"), (3, "line-3")]
    assert results[0]["output"].startswith("Order 1004")
    errors = raygent("batch", "results", batch_id, "--errors", "--state-dir", state).stdout.splitlines()
    assert [json.loads(x)["line"] for x in errors] == [2, 4]
    assert "already used on line 1" in errors[1]

    again = raygent("batch", "resume", batch_id, "--local", "--state-dir", state)
    assert again.returncode == 1 and "already completed" in " ".join(again.stderr.split())


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["batch", "run", "{input}", "--agent", "nobody"], 2, "no agent 'nobody'"),
        (["batch", "run", "{input}", "--agent", "orders", "--tier", "gold"], 2, "--tier must be one of"),
        (["batch", "run", "/no/such.jsonl", "--agent", "orders"], 1, "cannot read /no/such.jsonl"),
        (["batch", "status", "batch_0000000000"], 1, "there is no batch 'batch_0000000000'"),
        (["batch", "status", "../etc"], 1, "is not a batch id"),
        (
            ["batch", "submit", "{input}", "--agent", "orders", "--address", "http://127.0.0.1:9"],
            1,
            "no Ray cluster",
        ),
    ],
)
def test_bad_usage_is_one_clear_message(
    tmp_path: Path, input_file: Path, args: list[str], code: int, fragment: str
) -> None:
    args = [a.replace("{input}", str(input_file)) for a in args]
    done = raygent(*args, "--state-dir", str(tmp_path / "state"))
    assert done.returncode == code, done.stderr
    assert fragment in " ".join((done.stderr + done.stdout).split())


def test_empty_input_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = raygent("batch", "run", str(empty), "--agent", "orders", "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 1 and "is empty" in " ".join(done.stderr.split())
