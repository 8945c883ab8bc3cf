"""The runs page in headless Chromium (Debian's ``chromium``, driven by Playwright) against ``raygent up``:
a delegated run shows in the list with its status, cost and latency; its page shows the waterfall of the
run's spans across processes (ingress, both agents, model and tool calls) with their attributes. A
screenshot is saved under ``test-artifacts/`` (git-ignored)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RAYGENT = str(Path(sys.executable).parent / "raygent")
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("runs-page")
    shutil.copytree(
        REPO / "examples" / "support_desk", root / "fleet", ignore=shutil.ignore_patterns(".raygent")
    )
    fleet = root / "fleet" / "fleet.yaml"
    data = yaml.safe_load(fleet.read_text())
    data["telemetry"] = {"exporter": "jsonl"}  # the waterfall reads the spans every process wrote
    fleet.write_text(yaml.safe_dump(data))
    port, log = free_port(), root / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [RAYGENT, "up", str(fleet), "--port", str(port), "--state-dir", str(root / "state")],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    deadline = time.monotonic() + 300
    try:
        while "try: curl" not in log.read_text():
            if proc.poll() is not None:
                pytest.fail(f"raygent up exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"raygent up did not get ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_runs_list_and_waterfall_in_chromium(base_url: str) -> None:
    from playwright.sync_api import sync_playwright

    run = httpx.post(
        f"{base_url}/v1/agents/support/runs", json={"input": "where is order 1042?"}, timeout=120
    )
    assert run.status_code == 200, run.text
    run_id = run.json()["run_id"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(f"{base_url}/ui/runs")
            row = page.locator(f"tr[data-run='{run_id}']")
            text = row.inner_text()
            assert "support" in text and "completed" in text and "$0.00" in text and " ms" in text
            row.locator("a").click()
            page.wait_for_url(f"{base_url}/ui/runs/{run_id}")
            assert "timeline from the spans" in page.inner_text("body")
            steps = page.locator("#waterfall tr.step")
            labels = [t.strip() for t in steps.all_inner_texts()]

            def has(prefix: str) -> bool:
                return any(label.startswith(prefix) for label in labels)

            assert labels[0].startswith("POST /v1/agents/{agent}/runs")
            for prefix in (
                "invoke_agent support",
                "execute_tool ask_orders",
                "invoke_agent orders",
                "execute_tool lookup_order",
                "chat premium",
                "chat open-small",
            ):
                assert has(prefix), (prefix, labels)
            assert page.locator("#waterfall .bar.model").count() == 4
            assert page.locator("#waterfall .bar.tool").count() == 2
            lookup = steps.filter(has_text="execute_tool lookup_order").first
            lookup.locator("summary").click()  # the attributes open in place
            attributes = lookup.inner_text()
            assert "gen_ai.tool.name" in attributes and "1042" in attributes
            page.screenshot(path=str(ARTIFACTS / "runs-page.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "runs-page.png").stat().st_size > 10_000
