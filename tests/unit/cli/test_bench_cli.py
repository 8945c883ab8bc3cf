"""`raygent bench load` against a real local HTTP server; bad options exit 2 with a message."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@pytest.fixture
def target() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/agents/a/runs"
    finally:
        server.shutdown()
        server.server_close()


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from raygent.cli import main; main()", "bench", "load", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_closed_loop_json_report(target: str) -> None:
    done = bench(target, "--clients", "3", "--requests", "12", "--json", "-H", "X-Test: 1")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["requests"] == 12 and report["statuses"] == {"200": 12} and report["mode"] == "closed"
    assert report["all"]["p50_ms"] <= report["all"]["p99_ms"]


def test_open_loop_table(target: str) -> None:
    done = bench(target, "--rate", "100", "--requests", "10")
    assert done.returncode == 0, done.stderr
    assert "open loop" in done.stdout and "p99 ms" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ftp://x"], "http://"),
        (["http://x", "--body", "{nope"], "not valid JSON"),
        (["http://x", "--body", "[1]"], "JSON object"),
        (["http://x", "-H", "no-colon"], "Name: value"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from raygent.cli import main

    sys.argv = ["raygent", "bench", "load", *args]
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
