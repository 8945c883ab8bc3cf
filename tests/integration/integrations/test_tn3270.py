"""The terminal tool's ``tn3270`` backend (Debian's ``s3270``) against a real TN3270 host on loopback.

The host is ``mfmock demo`` from the PyPI package ``mainframe-mocker`` (a TN3270/TN3270E server written
in Python; it needs Python >= 3.12, so it runs as its own process under another interpreter). The test
skips, saying which, when ``s3270`` or such a host is missing. Where the package is not installed for
that interpreter, ``RAYGENT_TEST_MFMOCK_PATH`` may name a ``pip install --target`` directory holding it;
``RAYGENT_TEST_MFMOCK_PYTHON`` names the interpreter when ``python3.12``+ on the PATH is not it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from legacy_helpers import free_port

from raygent.core.config import TerminalToolSpec
from raygent.integrations.context import ToolContext
from raygent.integrations.errors import TerminalError
from raygent.integrations.terminal import TerminalToolExecutor

pytestmark = pytest.mark.integration


def _host_python(env: dict[str, str]) -> str | None:
    chosen = os.environ.get("RAYGENT_TEST_MFMOCK_PYTHON")
    for name in (chosen,) if chosen else ("python3.14", "python3.13", "python3.12"):
        exe = shutil.which(name)
        if exe is None:
            continue
        probe = subprocess.run([exe, "-c", "import mfmock"], env=env, capture_output=True, timeout=30)
        if probe.returncode == 0:
            return exe
    return None


@pytest.fixture(scope="module")
def tn3270_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("s3270") is None:
        pytest.skip("s3270 is not installed (Debian: apt-get install s3270)")
    env = dict(os.environ)
    extra = os.environ.get("RAYGENT_TEST_MFMOCK_PATH")
    if extra:
        env["PYTHONPATH"] = extra  # only for the host's interpreter, never for this one
    python = _host_python(env)
    if python is None:
        pytest.skip("no TN3270 test host: needs mainframe-mocker under Python >= 3.12")
    port = free_port()
    log = tmp_path_factory.mktemp("tn3270") / "mfmock.log"
    with log.open("wb") as fh:
        popen = subprocess.Popen(
            [python, "-m", "mfmock", "demo", "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        until = time.monotonic() + 20
        while "event=listening" not in log.read_text(errors="replace"):
            assert popen.poll() is None, f"the TN3270 host exited:\n{log.read_text(errors='replace')}"
            assert time.monotonic() < until, f"the TN3270 host did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        popen.terminate()
        popen.wait(10)


def _tool(host: str, password: str = "DEMO") -> TerminalToolExecutor:
    spec = TerminalToolSpec.model_validate(
        {
            "kind": "terminal",
            "description": "Greeting transaction on the demo host.",
            "backend": "tn3270",
            "host": host,
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
            "timeout_s": 20,
            "step_timeout_s": 5,
            "errors": ["INCORRECT", "NOT AUTHORIZED"],
            "steps": [
                {"wait_for": "SIGN ON"},
                {"send": "DEMO"},
                {"key": "tab"},
                {"send": password},
                {"key": "enter"},
                {"wait_for": "MAIN MENU"},
                {"send": "1"},
                {"key": "enter"},
                {"wait_for": "GREETING"},
                {"send": "{name}"},
                {"key": "enter"},
                {"wait_for": "HELLO,", "row": 6},
                {"read": {"greeting": [6, 17, 30], "message": [41, 1, 50]}},
                {"key": "pf3"},
            ],
        }
    )
    return TerminalToolExecutor("greet", spec, base_dir=Path("."))


def _ctx() -> ToolContext:
    return ToolContext(
        tool_call_id="run_t:s1:c0",
        idempotency_key="run_t:s1:c0",
        run_id="run_t",
        session_id="s",
        agent="screens",
        identity="svc-screens@acme",
        state_dir=Path("."),
    )


async def test_tn3270_session_signs_on_and_reads_fields_at_positions(tn3270_host: str) -> None:
    out = await _tool(tn3270_host).call(_ctx(), {"name": "ADA"}, timeout_s=20)
    assert out == {"greeting": "HELLO, ADA!", "message": "DEM0102I HELLO ADA, NICE TO MEET YOU"}


async def test_tn3270_error_screen_is_a_clear_error(tn3270_host: str) -> None:
    with pytest.raises(TerminalError, match="USER ID OR PASSWORD IS INCORRECT"):
        await _tool(tn3270_host, password="WRONG").call(_ctx(), {"name": "ADA"}, timeout_s=20)
