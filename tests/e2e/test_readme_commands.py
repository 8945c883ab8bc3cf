"""The README's main command in a subprocess, then real HTTP against it; and `raygent run` beside it.

`make up` is started exactly as the README says, with variables only for isolation (a free port, a
temporary state directory, a copy of the example fleet whose spans go to a JSONL file).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RAYGENT = str(Path(sys.executable).parent / "raygent")
QUESTION = "where is order 1042?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fleet_copy(dest: Path) -> Path:
    """The example fleet, with spans written to the state directory as JSON lines."""
    shutil.copytree(REPO / "examples" / "support_desk", dest, ignore=shutil.ignore_patterns(".raygent"))
    path = dest / "fleet.yaml"
    text = path.read_text().replace("exporter: none", "exporter: jsonl")
    assert "exporter: jsonl" in text
    path.write_text(text)
    return path


@dataclass(frozen=True)
class Served:
    base_url: str
    state_dir: Path
    process: subprocess.Popen[str]
    log: Path


@dataclass(frozen=True)
class CliRun:
    result: dict[str, Any]
    state_dir: Path


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """`raygent run` before `make up` starts, so two local Ray clusters never compete for the 2 cores."""
    root = tmp_path_factory.mktemp("cli")
    fleet = fleet_copy(root / "fleet")
    state = root / "state"
    done = subprocess.run(
        [RAYGENT, "run", "support", QUESTION, "--fleet", str(fleet), "--state-dir", str(state), "--json"],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return CliRun(json.loads(done.stdout), state)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, cli_run: CliRun) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("up")
    fleet = fleet_copy(root / "fleet")
    state, port, log = root / "state", free_port(), root / "up.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["make", "up", f"PORT={port}", f"STATE_DIR={state}", f"FLEET={fleet}"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"make up exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if "try: curl" in log.read_text():
                break
            if time.monotonic() > deadline:
                pytest.fail(f"make up did not get ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Served(base, state, proc, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_up_prints_the_urls(served: Served) -> None:
    text = served.log.read_text()
    assert f"{served.base_url}/v1/agents/{{agent}}/runs" in text
    assert f"{served.base_url}/openapi.json" in text
    assert "Traceback" not in text


def test_curl_gets_the_answer_with_run_id_steps_usage_and_cost(served: Served) -> None:
    # The README's curl, verbatim apart from the port.
    out = subprocess.run(
        [
            "curl", "-s", f"{served.base_url}/v1/agents/support/runs",
            "-H", "content-type: application/json",
            "-d", json.dumps({"input": QUESTION}),
        ],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    body = json.loads(out.stdout)
    assert body["output"] == "Order 1042 (espresso machine) is delivered. Delivered on 2026-11-18."
    assert body["run_id"].startswith("run_")
    assert [s["kind"] for s in body["steps"]] == ["model", "tool", "model"]
    assert body["usage"]["total_tokens"] > 0
    assert body["cost_usd"] > 0
    health = httpx.get(f"{served.base_url}/healthz", timeout=10)
    assert health.json() == {"status": "ok"}


# Ids are random per run, so anything derived from them differs; everything else must be equal.
VOLATILE = {"latency_ms", "call_id", "messages_sha256"}


def _audit_shape(state: Path, top_run: str) -> list[tuple[str, str, str, str]]:
    """Audit records of one request: the top run, then each run it delegated to, ids and timings removed."""
    with sqlite3.connect(state / "raygent.db") as conn:
        rows = conn.execute(
            "SELECT run_id, agent, identity, kind, payload FROM audit ORDER BY seq"
        ).fetchall()
    by_run: dict[str, list[tuple[str, str, str, dict[str, Any]]]] = defaultdict(list)
    for run_id, agent, identity, kind, payload in rows:
        by_run[run_id].append((agent, identity, kind, json.loads(payload)))
    shape, queue = [], [top_run]
    while queue:
        for agent, identity, kind, data in by_run[queue.pop(0)]:
            result = data.get("result")
            if kind == "backend_response" and isinstance(result, dict) and "run_id" in result:
                queue.append(result.pop("run_id"))
            for key in VOLATILE:
                data.pop(key, None)
            shape.append((agent, identity, kind, json.dumps(data, sort_keys=True)))
    return shape


def _span_shape(state: Path, trace_id: str) -> list[tuple[str, str, str, tuple[str, ...]]]:
    spans = [json.loads(line) for line in (state / "spans.jsonl").read_text().splitlines()]
    mine = [s for s in spans if s["trace_id"] == trace_id and s["kind"] != "SERVER"]
    by_id = {s["span_id"]: s for s in mine}
    return sorted(
        (
            s["name"],
            s["resource"].get("raygent.component", ""),
            by_id[s["parent_span_id"]]["name"] if s["parent_span_id"] in by_id else "<root>",
            tuple(sorted(s["attributes"])),
        )
        for s in mine
    )


def test_cli_run_and_http_leave_the_same_audit_records_and_spans(served: Served, cli_run: CliRun) -> None:
    cli, cli_state = cli_run.result, cli_run.state_dir
    http = httpx.post(
        f"{served.base_url}/v1/agents/support/runs", json={"input": QUESTION}, timeout=60
    ).json()
    assert cli["output"] == http["output"]
    assert cli["usage"] == http["usage"] and cli["cost_usd"] == http["cost_usd"]
    cli_audit = _audit_shape(cli_state, cli["run_id"])
    http_audit = _audit_shape(served.state_dir, http["run_id"])
    assert len(cli_audit) > 7
    assert cli_audit == http_audit
    time.sleep(1.0)  # spans are written when each span ends; the run's root ends last
    cli_spans = _span_shape(cli_state, cli["trace_id"])
    assert len(cli_spans) >= 8
    assert cli_spans == _span_shape(served.state_dir, http["trace_id"])


def test_up_stops_cleanly_on_sigint(served: Served) -> None:
    os.killpg(served.process.pid, signal.SIGINT)
    served.process.wait(timeout=90)
    assert "Traceback" not in served.log.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{served.base_url}/healthz", timeout=2)
