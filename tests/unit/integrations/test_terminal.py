"""The terminal tool kind: key sequences, and a script run against the example's green-screen program
on a real pseudo-terminal."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import pytest

from raygent.core.config import TerminalToolSpec
from raygent.integrations.errors import TerminalError, ToolLoadError, ToolTimeoutError
from raygent.integrations.terminal import PtyDriver, pty_key, run_script

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "legacy_mainframe"


def test_function_keys_are_xterm_sequences() -> None:
    assert pty_key("pf3") == "\x1bOR"
    assert pty_key("pf12") == "\x1b[24~"
    assert pty_key("pf15") == "\x1b[1;2R"  # shifted F3
    assert pty_key("pf17") == "\x1b[15;2~"  # shifted F5
    assert pty_key("backtab") == "\x1b[Z"


def spec(**changes: object) -> TerminalToolSpec:
    steps = [
        {"wait_for": "SIGN-ON"},
        {"send": "RAYGENT"},
        {"key": "tab"},
        {"send": "{password}"},
        {"key": "enter"},
        {"wait_for": "MAIN MENU", "row": 0},
        {"send": "1"},
        {"key": "enter"},
        {"wait_for": "ORDER INQUIRY"},
        {"send": "{order_id}"},
        {"key": "enter"},
        {"wait_for": "INQUIRY COMPLETE", "row": 21},
        {"read": {"status": [6, 19, 12], "balance": [10, 19, 12]}},
    ]
    base = {
        "kind": "terminal",
        "command": [sys.executable, "green_screen.py"],
        "errors": ["NOT FOUND", "INVALID"],
        "steps": steps,
        "step_timeout_s": 5,
    }
    return TerminalToolSpec.model_validate({**base, **changes})


def run(tool: TerminalToolSpec, **arguments: str) -> object:
    driver = PtyDriver(tool.command, cwd=EXAMPLE, rows=tool.rows, cols=tool.cols)
    try:
        return run_script(driver, tool, arguments, timeout_s=20)
    finally:
        driver.close()


def test_reads_fields_at_positions() -> None:
    assert run(spec(), password="LEGACY1", order_id="1003") == {"status": "CANCELLED", "balance": "-396.36"}


def test_a_process_with_over_1024_open_files_still_drives_the_screen() -> None:
    """select() cannot watch a descriptor numbered 1024 or more; a busy process has such numbers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.fail(f"this machine allows only {hard} open files; the test needs 2048")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert run(spec(), password="LEGACY1", order_id="1003") == {
            "status": "CANCELLED",
            "balance": "-396.36",
        }
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_error_screen_fails_with_its_line_and_the_screen() -> None:
    with pytest.raises(TerminalError, match="the screen shows: INVALID USERID OR PASSWORD") as info:
        run(spec(), password="wrong", order_id="1")
    assert "SIGN-ON" in info.value.extra["screen"]


def test_a_screen_that_never_comes_is_a_clear_error() -> None:
    tool = spec(step_timeout_s=0.5, steps=[{"wait_for": "NEVER SHOWN"}])
    with pytest.raises(TerminalError, match="did not show 'NEVER SHOWN' in time; it shows: ACME01"):
        run(tool)


def test_the_whole_session_is_bounded_by_the_timeout() -> None:
    tool = spec(step_timeout_s=60, steps=[{"wait_for": "NEVER SHOWN"}])
    driver = PtyDriver(tool.command, cwd=EXAMPLE, rows=24, cols=80)
    try:
        with pytest.raises(ToolTimeoutError):
            run_script(driver, tool, {}, timeout_s=0.5)
    finally:
        driver.close()


def test_missing_argument_and_missing_program() -> None:
    with pytest.raises(TerminalError, match="uses 'password' but the call has no such argument"):
        run(spec(), order_id="1")
    with pytest.raises(ToolLoadError, match="cannot start"):
        PtyDriver(["/nonexistent/program"], cwd=EXAMPLE, rows=24, cols=80)
