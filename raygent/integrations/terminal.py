"""The ``terminal`` tool kind: a scripted green-screen session.

A script is a list of steps: type text, press keys (Enter, Tab, PF keys as escape sequences), wait until
the screen shows something, read fields at fixed positions. The screen is modelled, not scraped from a
byte stream: a full-screen program on a pseudo-terminal is fed into a pyte screen (``backend: pty``); a
TN3270 host is driven through Debian's ``s3270`` emulator, whose screen is read with ``Ascii()``
(``backend: tn3270``). Each call runs one session from start to end on a worker thread, bounded by the
tool's timeout; any screen matching one of the tool's ``errors`` patterns fails the call with that line.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from raygent.core.config import TerminalStep, TerminalToolSpec
from raygent.integrations.context import ToolContext
from raygent.integrations.errors import TerminalError, ToolLoadError, ToolTimeoutError

__all__ = ["PtyDriver", "S3270Driver", "ScreenDriver", "TerminalToolExecutor", "run_script"]

_PF = {
    1: "\x1bOP", 2: "\x1bOQ", 3: "\x1bOR", 4: "\x1bOS", 5: "\x1b[15~", 6: "\x1b[17~", 7: "\x1b[18~",
    8: "\x1b[19~", 9: "\x1b[20~", 10: "\x1b[21~", 11: "\x1b[23~", 12: "\x1b[24~",
}  # fmt: skip
_KEYS = {
    "enter": "\r", "tab": "\t", "backtab": "\x1b[Z", "escape": "\x1b", "clear": "\x0c",
    "backspace": "\x7f", "up": "\x1b[A", "down": "\x1b[B", "right": "\x1b[C", "left": "\x1b[D",
    "home": "\x1b[H",
}  # fmt: skip
_S3270_KEYS = {
    "enter": "Enter", "tab": "Tab", "backtab": "BackTab", "escape": "Reset", "clear": "Clear",
    "backspace": "BackSpace", "up": "Up", "down": "Down", "right": "Right", "left": "Left", "home": "Home",
}  # fmt: skip
_POLL_S = 0.02


def pty_key(key: str) -> str:
    """The bytes a VT220/xterm terminal sends for ``key`` (PF13-24 are shifted F1-F12)."""
    if key.startswith("pf"):
        number = int(key[2:])
        if number <= 12:
            return _PF[number]
        base = _PF[number - 12]
        # Shifted function keys: ESC O P → ESC [1;2P, ESC [15~ → ESC [15;2~
        return f"\x1b[1;2{base[-1]}" if base.startswith("\x1bO") else base[:-1] + ";2~"
    return _KEYS[key]


class ScreenDriver(Protocol):
    """One live terminal session."""

    def send_text(self, text: str) -> None: ...

    def send_key(self, key: str) -> None: ...

    def screen(self, wait_s: float) -> list[str]:
        """The current screen, one string per row, after taking in output for up to ``wait_s``."""
        ...

    def close(self) -> None: ...


class PtyDriver:
    """A full-screen program on a pseudo-terminal, its output interpreted by a pyte screen."""

    def __init__(self, command: list[str], *, cwd: Path, rows: int, cols: int) -> None:
        import pexpect
        import pyte

        env = {**os.environ, "TERM": "vt100", "LINES": str(rows), "COLUMNS": str(cols)}
        try:
            # use_poll: select() fails for a descriptor numbered 1024 or more, which a long-lived process
            # with many connections (a gateway replica) hands out.
            self._child = pexpect.spawn(
                command[0],
                command[1:],
                cwd=str(cwd),
                env=env,
                dimensions=(rows, cols),
                echo=False,
                use_poll=True,
            )
        except pexpect.ExceptionPexpect as exc:
            raise ToolLoadError(f"cannot start {command[0]!r}: {exc}") from None
        self._screen = pyte.Screen(cols, rows)
        self._stream = pyte.ByteStream(self._screen)

    def send_text(self, text: str) -> None:
        self._child.send(text)

    def send_key(self, key: str) -> None:
        self._child.send(pty_key(key))

    def screen(self, wait_s: float) -> list[str]:
        import pexpect

        try:
            data = self._child.read_nonblocking(65536, timeout=wait_s)
            self._stream.feed(data)
            # Drain what else is ready so one screen update is taken in whole.
            while True:
                self._stream.feed(self._child.read_nonblocking(65536, timeout=0))
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            if not self._child.isalive() and wait_s > 0:
                time.sleep(min(wait_s, _POLL_S))
        return list(self._screen.display)

    def close(self) -> None:
        self._child.close(force=True)


class S3270Driver:
    """A TN3270 session through Debian's ``s3270`` scripting emulator (commands on stdin)."""

    def __init__(self, host: str, *, connect_timeout_s: float) -> None:
        binary = shutil.which("s3270")
        if binary is None:
            raise ToolLoadError("backend tn3270 needs the s3270 program (Debian: apt-get install s3270)")
        self._proc = subprocess.Popen(
            [binary, "-utf8"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        seconds = max(1, int(connect_timeout_s))
        self.command(f"Connect({host})")
        self.command(f"Wait({seconds},InputField)")

    def command(self, action: str) -> list[str]:
        """Run one s3270 action; returns its ``data:`` lines."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(action + "\n")
        self._proc.stdin.flush()
        data: list[str] = []
        while True:
            line = self._proc.stdout.readline()
            if not line:
                raise TerminalError(f"s3270 exited during {action.split('(')[0]}")
            line = line.rstrip("\n")
            if line == "ok":
                return data
            if line == "error":
                raise TerminalError(f"s3270 {action.split('(')[0]} failed: {' '.join(data) or 'no detail'}")
            if line.startswith("data: "):
                data.append(line[6:])
            elif line == "data:":
                data.append("")

    def send_text(self, text: str) -> None:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        self.command(f'String("{escaped}")')

    def send_key(self, key: str) -> None:
        action = f"PF({int(key[2:])})" if key.startswith("pf") else _S3270_KEYS[key]
        self.command(action)

    def screen(self, wait_s: float) -> list[str]:
        time.sleep(wait_s)
        return self.command("Ascii()")

    def close(self) -> None:
        try:
            self.command("Quit")
        except TerminalError:
            pass
        finally:
            self._proc.kill()
            self._proc.wait(timeout=5)


def _screen_text(rows: list[str]) -> str:
    return "\n".join(row.rstrip() for row in rows).rstrip("\n")


def _format(template: str, arguments: dict[str, Any]) -> str:
    try:
        return template.format_map(arguments)
    except (KeyError, IndexError) as exc:
        raise TerminalError(f"the script uses {exc} but the call has no such argument") from None


class _Session:
    def __init__(self, driver: ScreenDriver, spec: TerminalToolSpec, deadline: float) -> None:
        self.driver = driver
        self.spec = spec
        self.deadline = deadline
        self.errors = [re.compile(p) for p in spec.errors]
        self.rows: list[str] = []

    def fail_on_error_screen(self) -> None:
        for row in self.rows:
            if any(p.search(row) for p in self.errors):
                raise TerminalError(
                    f"the screen shows: {row.strip()}", extra={"screen": _screen_text(self.rows)}
                )

    def wait_for(self, step: TerminalStep) -> None:
        assert step.wait_for is not None
        pattern = re.compile(step.wait_for)
        until = min(self.deadline, time.monotonic() + self.spec.step_timeout_s)
        while True:
            self.rows = self.driver.screen(_POLL_S)
            region = (
                [self.rows[step.row]] if step.row is not None and step.row < len(self.rows) else self.rows
            )
            if any(pattern.search(r) for r in region):
                return
            self.fail_on_error_screen()
            if time.monotonic() >= until:
                timed_out = time.monotonic() >= self.deadline
                where = f" on row {step.row}" if step.row is not None else ""
                error = ToolTimeoutError if timed_out else TerminalError
                raise error(
                    f"the screen did not show {step.wait_for!r}{where} in time; it shows: "
                    f"{next((r.strip() for r in self.rows if r.strip()), '(blank)')}",
                    extra={"screen": _screen_text(self.rows)},
                )

    def read(self, fields: dict[str, tuple[int, int, int]]) -> dict[str, str]:
        self.rows = self.driver.screen(0)
        out: dict[str, str] = {}
        for name, (row, col, length) in fields.items():
            if row >= len(self.rows):
                raise TerminalError(f"field {name!r} is at row {row}; the screen has {len(self.rows)} rows")
            out[name] = self.rows[row][col : col + length].strip()
        return out


def run_script(
    driver: ScreenDriver, spec: TerminalToolSpec, arguments: dict[str, Any], *, timeout_s: float
) -> Any:
    """Run the tool's steps on ``driver``; returns the fields read. Blocking (call it on a thread)."""
    session = _Session(driver, spec, time.monotonic() + timeout_s)
    result: dict[str, str] = {}
    for step in spec.steps:
        if time.monotonic() >= session.deadline:
            raise ToolTimeoutError(f"the terminal session did not finish within {timeout_s:g} s")
        if step.send is not None:
            driver.send_text(_format(step.send, arguments))
        elif step.key is not None:
            driver.send_key(step.key)
        elif step.wait_for is not None:
            session.wait_for(step)
        elif step.read is not None:
            result.update(session.read(step.read))
    return result


class TerminalToolExecutor:
    """One ``terminal`` tool in one gateway replica: a fresh session per call.

    Args:
        name: The tool's name.
        spec: The target and the script.
        base_dir: The working directory of a ``pty`` program.
    """

    def __init__(self, name: str, spec: TerminalToolSpec, *, base_dir: Path) -> None:
        self._name = name
        self._spec = spec
        self._base_dir = base_dir

    def _session(self, arguments: dict[str, Any], timeout_s: float) -> Any:
        spec = self._spec
        driver: ScreenDriver
        if spec.backend == "tn3270":
            assert spec.host is not None  # the spec's validator requires it
            driver = S3270Driver(spec.host, connect_timeout_s=min(timeout_s, spec.step_timeout_s))
        else:
            # "{python}" in the command is this interpreter, so an example runs wherever raygent does.
            command = [sys.executable if part == "{python}" else part for part in spec.command]
            driver = PtyDriver(command, cwd=self._base_dir, rows=spec.rows, cols=spec.cols)
        try:
            return run_script(driver, spec, arguments, timeout_s=timeout_s)
        finally:
            driver.close()

    async def call(self, ctx: ToolContext, arguments: dict[str, Any], *, timeout_s: float) -> Any:
        # The script watches its own deadline; the outer bound only guards against a wedged driver.
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._session, arguments, timeout_s), timeout_s + 2
            )
        except TimeoutError:
            raise ToolTimeoutError(f"the terminal session did not finish within {timeout_s:g} s") from None

    async def aclose(self) -> None:
        return None
