"""The approvals page in headless Chromium (Debian's ``chromium``, driven by Playwright): a refund over
$200 parks; an approver signs in with a token from ``raygent token issue``, sees the proposed action,
its context and the agent's reasoning, approves, and the run completes; and an in-doubt side effect is
settled on the page with the result the backend shows ("It happened"). Screenshots are saved under
``test-artifacts/`` (git-ignored): the pending card, and the pages after the decisions."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

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


@dataclass(frozen=True)
class Served:
    base_url: str
    fleet: Path
    state_dir: Path

    def token(self, sub: str, role: str, customer: str | None = None) -> str:
        cmd = [RAYGENT, "token", "issue", "--role", role, "--sub", sub, "--ttl-s", "900"]
        cmd += ["--fleet", str(self.fleet), "--state-dir", str(self.state_dir)]
        if customer:
            cmd += ["--customer", customer]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
        return done.stdout.strip()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("approvals-page")
    shutil.copytree(
        REPO / "examples" / "support_desk", root / "fleet", ignore=shutil.ignore_patterns(".raygent")
    )
    fleet, state, port, log = root / "fleet" / "governed.yaml", root / "state", free_port(), root / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [RAYGENT, "up", str(fleet), "--port", str(port), "--state-dir", str(state)],
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
        yield Served(f"http://127.0.0.1:{port}", fleet, state)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def sign_in(page: Any, base_url: str, token: str) -> None:
    """Fill the sign-in form the page is on with ``token``; back on the approvals list when done."""
    page.fill("textarea[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/ui/approvals")


def test_approver_signs_in_approves_and_the_run_completes(served: Served) -> None:
    from playwright.sync_api import sync_playwright

    customer = served.token("C107", "customer", customer="C107")
    held = httpx.post(
        f"{served.base_url}/v1/agents/support/runs",
        json={"input": "refund order 1080, it arrived broken"},
        headers={"authorization": f"Bearer {customer}"},
        timeout=120,
    )
    assert held.status_code == 202, held.text
    run_id, approval_id = held.json()["run_id"], held.json()["approval_id"]
    approver = served.token("alice", "approver")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)  # deciding resumes the run within the request
            page.goto(f"{served.base_url}/ui/approvals")
            assert page.url.endswith("/ui/approvals/login")  # not signed in: sent to the sign-in form
            sign_in(page, served.base_url, approver)
            assert page.inner_text("#who") == "alice"
            card = page.locator(f"[data-approval-id='{approval_id}']")
            text = card.inner_text()
            assert "issue_refund" in text and "$299.38" in text and "C107" in text
            reasoning = " ".join(card.locator(".reasoning").all_inner_texts())  # the agent's reasoning
            assert "Looking up order 1080" in reasoning and "refunding 299.38 USD" in reasoning
            assert "approve" in card.locator(".verdict").inner_text()  # the validator agent's verdict
            # A forged post without the page's CSRF token is refused, with the session cookie.
            cookies = {c["name"]: c["value"] for c in page.context.cookies()}
            forged = httpx.post(
                f"{served.base_url}/ui/approvals/{approval_id}",
                data={"decision": "approve"},
                cookies=cookies,
                timeout=60,
            )
            assert forged.status_code == 403
            card.locator("input[name=reason]").fill("customer sent a photo")
            page.screenshot(path=str(ARTIFACTS / "approvals-page-pending.png"), full_page=True)
            card.locator("button[value=approve]").click()
            page.wait_for_selector("#message", timeout=120_000)
            message = page.inner_text("#message")
            page.screenshot(path=str(ARTIFACTS / "approvals-page.png"), full_page=True)
        finally:
            browser.close()
    assert f"approval {approval_id} is approved" in message
    assert "completed" in message and "of $299.38 for order 1080 has been issued" in message
    run = httpx.get(
        f"{served.base_url}/v1/runs/{run_id}", headers={"authorization": f"Bearer {customer}"}, timeout=60
    ).json()
    assert run["status"] == "completed"
    assert (ARTIFACTS / "approvals-page.png").stat().st_size > 10_000
    assert (ARTIFACTS / "approvals-page-pending.png").stat().st_size > 10_000


def hold_an_in_doubt_call(served: Served, key: str) -> str:
    """Leave the ledger and the approvals as a crash between a side effect and its record does: the
    call held for a person (written from this process into the served fleet's state, as a gateway
    replica would)."""
    import asyncio

    from raygent.core.clock import SystemClock
    from raygent.core.fleetfile import load_fleet
    from raygent.core.interceptors import CallContext, ToolCallInput
    from raygent.core.messages import ToolCall
    from raygent.core.store import open_store
    from raygent.governance.decision import PolicyDecision
    from raygent.governance.effects import IN_DOUBT_POLICY
    from raygent.governance.runtime import Governance

    async def hold() -> str:
        fleet = load_fleet(served.fleet, state_dir=served.state_dir)
        store = open_store(fleet)
        try:
            await store.begin_effect(
                key,
                run_id="run_e2e_doubt",
                tool="issue_refund",
                fingerprint="f",
                now=0.0,
                expected_attempts=0,
            )
            await store.settle_effect(
                key, status="needs_approval", outcome=None, reason="crash", now=1.0, expected_attempts=1
            )
            gov = Governance.open(fleet, store=store, clock=SystemClock())
            ctx = CallContext(
                run_id="run_e2e_doubt", session_id="s", agent="support", identity="svc-support@acme", step=2
            )
            call = ToolCall(id=f"{key}:in-doubt:1", name="issue_refund", arguments={"order_id": "1080"})
            decision = PolicyDecision(
                allowed=True,
                obligations=("approval",),
                policies=(IN_DOUBT_POLICY,),
                reasons=("crash",),
                context={"idempotency_key": key, "attempts": 1, "reason": "the outcome was never recorded"},
            )
            return (await gov.approvals.hold(ToolCallInput(ctx, call), decision, None)).approval_id
        finally:
            await store.close()

    return asyncio.run(hold())


def effect_of(served: Served, key: str) -> Any:
    import asyncio

    from raygent.core.fleetfile import load_fleet
    from raygent.core.store import open_store

    async def read() -> Any:
        store = open_store(load_fleet(served.fleet, state_dir=served.state_dir))
        try:
            return await store.get_effect(key)
        finally:
            await store.close()

    return asyncio.run(read())


def test_an_in_doubt_call_is_settled_on_the_page_with_the_result_the_backend_shows(served: Served) -> None:
    from playwright.sync_api import sync_playwright

    key = "run_e2e_doubt:s2:c0"
    approval_id = hold_an_in_doubt_call(served, key)
    approver = served.token("bob", "approver")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{served.base_url}/ui/approvals/login")
            sign_in(page, served.base_url, approver)
            card = page.locator(f"[data-approval-id='{approval_id}']")
            text = card.inner_text()
            assert "Outcome unknown" in text and key in text and "It happened" in text
            card.locator("textarea[name=result]").fill('{"status": "issued", "refund_id": "rf_77"}')
            card.locator("input[name=reason]").fill("seen in the payments console")
            card.locator("button[value=settle]").click()
            page.wait_for_selector("#message", timeout=120_000)
            message = page.inner_text("#message")
            page.screenshot(path=str(ARTIFACTS / "approvals-page-in-doubt.png"), full_page=True)
        finally:
            browser.close()
    assert f"approval {approval_id} is denied: the call is recorded as done" in message
    effect = effect_of(served, key)
    assert effect is not None and effect.status == "done"
    assert effect.outcome["result"] == {"status": "issued", "refund_id": "rf_77"}
    assert effect.outcome["settled_by"] == "bob"


def test_raygent_approvals_settle_records_the_result_from_the_command_line(served: Served) -> None:
    key = "run_e2e_cli:s2:c0"
    approval_id = hold_an_in_doubt_call(served, key)
    token = served.token("carol", "approver")
    base = [RAYGENT, "approvals", "settle", approval_id, "--url", served.base_url, "--token", token]
    bad = subprocess.run([*base, "--result", "{not json"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--result must be JSON" in bad.stderr
    assert "Traceback" not in bad.stderr
    done = subprocess.run(
        [*base, "--result", '{"status": "issued"}', "--reason", "seen in the console"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"approval {approval_id}: denied" in done.stdout
    effect = effect_of(served, key)
    assert effect is not None and effect.status == "done"
    assert (effect.outcome["result"], effect.outcome["settled_by"]) == ({"status": "issued"}, "carol")
    again = subprocess.run([*base, "--result", "{}"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "409" in again.stderr and "already denied" in again.stderr
